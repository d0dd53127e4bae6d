"""Atomic file writes and checksum manifests.

Every artifact is written under a temporary name in the same directory and then
renamed, so an interrupted run never leaves a file that looks complete.
"""
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile

MANIFEST_NAME = "MANIFEST.json"
LOCK_NAME = ".lock"  # Held by the process writing into a run directory.


def write_bytes_atomic(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json_atomic(path: str, obj) -> None:
  write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


def _listed_files(root: str):
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      rel = os.path.relpath(os.path.join(dirpath, name), root)
      if rel != MANIFEST_NAME and not name.startswith(".tmp-"):
        yield rel


def write_manifest(root: str, extra: dict | None = None) -> dict:
  """Checksums every file under `root`; written last, it marks the tree complete."""
  manifest = {
      "files": {rel: sha256_file(os.path.join(root, rel)) for rel in _listed_files(root)},
      **(extra or {}),
  }
  write_json_atomic(os.path.join(root, MANIFEST_NAME), manifest)
  return manifest


def verify_manifest(root: str) -> list[str]:
  """Returns the problems found (missing, changed or unlisted files); empty if intact."""
  manifest = read_json(os.path.join(root, MANIFEST_NAME))
  listed = manifest.get("files") if isinstance(manifest, dict) else None
  if not isinstance(listed, dict):
    return [f"{MANIFEST_NAME} has no file list"]
  problems = []
  for rel, digest in listed.items():
    path = os.path.join(root, rel)
    if not os.path.exists(path):
      problems.append(f"missing file {rel}")
    elif sha256_file(path) != digest:
      problems.append(f"changed file {rel}")
  problems += [f"unlisted file {rel}" for rel in _listed_files(root) if rel not in listed]
  return problems


def replace_dir(src: str, dst: str) -> None:
  """Moves a finished temporary directory into place (rename is atomic on one filesystem)."""
  if os.path.exists(dst):
    shutil.rmtree(dst)
  os.replace(src, dst)


def differing_keys(saved: dict, current: dict, prefix: str = "") -> list:
  """Dotted keys whose values differ between two nested dicts (e.g. configs as JSON)."""
  keys = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      keys += differing_keys(a, b, f"{prefix}{key}.")
    elif a != b:
      keys.append(prefix + key)
  return keys


@contextlib.contextmanager
def exclusive(directory: str, what: str):
  """Holds DIRECTORY/.lock for the process writing into it (`what`: which stage); a second
  process gets a one-line error naming the holder. The kernel releases the lock when the
  holder dies, so a killed run never leaves the directory locked. A directory this call
  created and in which nothing else was written is removed again on the way out, so a
  refused request leaves nothing behind."""
  from salmu_jax.errors import ConfigError
  created = not os.path.exists(directory)
  os.makedirs(directory, exist_ok=True)
  handle = open(os.path.join(directory, LOCK_NAME), "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or "another process"
    handle.close()
    raise ConfigError(f"{directory} is in use by {holder}; wait for it to finish, or use "
                      f"another directory") from None
  handle.seek(0)
  handle.truncate()
  handle.write(f"{what} (pid {os.getpid()} on {socket.gethostname()}, since "
               f"{datetime.datetime.now().isoformat(timespec='seconds')})\n")
  handle.flush()
  try:
    yield
  finally:
    if created and os.listdir(directory) == [LOCK_NAME]:
      os.unlink(os.path.join(directory, LOCK_NAME))
      os.rmdir(directory)
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()
