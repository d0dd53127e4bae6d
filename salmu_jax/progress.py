"""The one progress bar every stage draws (tqdm on stderr, off when not wanted)."""


def bar(iterable=None, *, desc: str, unit: str, enabled: bool = True, **kwargs):
  from tqdm import tqdm
  return tqdm(iterable, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, **kwargs)
