"""An installed distribution as pip would leave it (a module and a dist-info folder with entry points), written
into a folder to put on ``sys.path``: how the plugin tests install a plugin without pip."""

from __future__ import annotations

from pathlib import Path


def write_distribution(folder: Path, name: str, module: str, source: str, groups: dict[str, str]) -> None:
    """``module``.py holding ``source``, and ``name``'s dist-info naming it under each entry-point group
    (``groups``: group → entry name)."""
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n{entry} = {module}\n\n" for group, entry in groups.items()))
