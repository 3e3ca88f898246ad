"""The documentation's pointers into the code stay true when the code moves."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mima_loss_table() -> list[tuple[str, str, list[int]]]:
    text = (ROOT / "docs" / "models.md").read_text()
    head = "| term (preprint) | code | line |"
    assert head in text, "docs/models.md lost the table of MIMA's loss terms"
    rows = []
    for line in text.split(head, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        term, code, lines = [c.strip() for c in line.strip("|").split("|")]
        a, _, b = lines.partition("-")
        rows.append((term, code, list(range(int(a), int(b or a) + 1))))
    return rows


def test_mima_loss_table_points_at_each_terms_code():
    """Each row's first code token (``terms["kl_<latent>_<m>"]``: the key, ``<x>`` standing for any f-string
    field) occurs on one of the lines the row gives in _mima_module.py."""
    source = (ROOT / "src" / "spatialmix" / "models" / "_mima_module.py").read_text().splitlines()
    rows = _mima_loss_table()
    assert len(rows) >= 8
    for term, code, lines in rows:
        token = re.search(r"`([^`]+)`", code).group(1)
        key = re.fullmatch(r'terms\["(.+)"\]', token)
        if key:  # a loss-dict key written as an f-string in the code
            pattern = '"' + "".join(r"\{[^}]*\}" if part.startswith("<") else re.escape(part)
                                    for part in re.split(r"(<[^>]+>)", key.group(1))) + '"'
        else:  # a function, method or variable: its definition or assignment
            pattern = rf"(def {re.escape(token)}\(|\b{re.escape(token)} = )"
        hits = [n for n in lines if re.search(pattern, source[n - 1])]
        assert hits, (f"docs/models.md: {term!r} says {token} is on line(s) {lines[0]}-{lines[-1]} of "
                      f"_mima_module.py, but it is not there; found on "
                      f"{[i + 1 for i, s in enumerate(source) if re.search(pattern, s)]}")
