"""Magic SysRq keys: which are valid, and their Linux input key codes for QMP send-key."""

from __future__ import annotations

from lab.domain.errors import InvalidInput

KEY_LEFTALT = 56
KEY_SYSRQ = 99

_LETTERS = "qwertyuiop asdfghjkl zxcvbnm"
_ROW_START = {0: 16, 1: 30, 2: 44}  # KEY_Q, KEY_A, KEY_Z
KEYCODES: dict[str, int] = {}
for _row, _keys in enumerate(_LETTERS.split()):
    for _i, _ch in enumerate(_keys):
        KEYCODES[_ch] = _ROW_START[_row] + _i
KEYCODES.update({str(d): 1 + d for d in range(1, 10)})  # KEY_1 = 2 ... KEY_9 = 10
KEYCODES["0"] = 11

#: Keys the kernel's SysRq handler knows (0-9 set the loglevel; letters per sysrq.rst).
SYSRQ_KEYS = frozenset("0123456789bcdefghijklmnopqrstuvwxz")
#: Longest sequence one request may send (e.g. "reisub").
MAX_SEQUENCE = 16


def parse_sysrq_keys(keys: str) -> str:
    """Validate a SysRq key or sequence ("h", "reisub"); return it lowercased."""
    seq = keys.strip().lower()
    if not seq:
        raise InvalidInput("a SysRq key is required, e.g. 'h' (help) or 'reisub'", target="keys")
    if len(seq) > MAX_SEQUENCE:
        raise InvalidInput(f"a SysRq sequence may have at most {MAX_SEQUENCE} keys", target="keys")
    bad = sorted(set(seq) - SYSRQ_KEYS)
    if bad:
        raise InvalidInput(
            f"not SysRq keys: {', '.join(repr(k) for k in bad)}; "
            "SysRq keys are 0-9 and the letters b-z except 'y' (see the kernel's sysrq.rst)",
            target="keys",
        )
    return seq
