"""Starts N processes of one salmu_jax command on this machine, as a cluster would.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python -m salmu_jax.train --config=configs/micro.py:clean --workdir=runs/mp

Each process runs on the CPU with `--devices_per_process` devices, and gets the
coordinator address of a free localhost port, the process count and its process id as
flags after the command. Process 0 writes to this terminal; process i > 0 to
LOG_DIR/process_i.log. If one process fails, the others are stopped; the launcher exits
with the first failure's status (124 when `--timeout` runs out).
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(command, num_processes: int, devices_per_process: int, log_dir: str,
           timeout: float | None) -> int:
  address = f"localhost:{free_port()}"
  os.makedirs(log_dir, exist_ok=True)
  processes, logs = [], []
  for index in range(num_processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    out = None
    if index:
      out = open(os.path.join(log_dir, f"process_{index}.log"), "w")
      logs.append(out)
    processes.append(subprocess.Popen(
        list(command) + [f"--coordinator_address={address}", f"--num_processes={num_processes}",
                         f"--process_id={index}"], env=env, stdout=out, stderr=out))
  deadline = None if timeout is None else time.monotonic() + timeout
  status = 0
  try:
    while any(p.poll() is None for p in processes):
      failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
      if failed or (deadline is not None and time.monotonic() > deadline):
        status = failed[0] if failed else 124
        break
      time.sleep(0.2)
    else:
      status = next((p.returncode for p in processes if p.returncode), 0)
  finally:
    for p in processes:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)  # Lets a trainer checkpoint before it goes.
    for p in processes:
      try:
        p.wait(timeout=60)
      except subprocess.TimeoutExpired:
        p.kill()
    for log in logs:
      log.close()
  return status


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--log_dir", default=None, help="Default: a new temporary directory.")
  parser.add_argument("--timeout", type=float, default=None, help="Seconds; then stop all.")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.num_processes < 1 or args.devices_per_process < 1:
    parser.error("give --num_processes >= 1, --devices_per_process >= 1 and a command after --")
  log_dir = args.log_dir or tempfile.mkdtemp(prefix="salmu_launch_")
  status = launch(command, args.num_processes, args.devices_per_process, log_dir, args.timeout)
  if args.num_processes > 1:
    print(f"logs of processes 1..{args.num_processes - 1}: {log_dir}", file=sys.stderr)
  sys.exit(status)


if __name__ == "__main__":
  main()
