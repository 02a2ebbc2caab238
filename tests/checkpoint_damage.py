"""Damage a saved checkpoint the ways disks and people do (for the reliability tests)."""


def damage_newest_save(folder, how: str) -> None:
    """Flip 8 bytes in, or truncate, the largest data file of ``folder``'s state, or delete
    its metadata."""
    if how == "metadata":
        (folder / "metadata" / "metadata").unlink()
        return
    data = max((p for p in (folder / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)
    size = data.stat().st_size
    with open(data, "r+b") as f:
        if how == "truncate":
            f.truncate(size // 2)
        else:
            f.seek(size // 2)
            chunk = f.read(8)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
