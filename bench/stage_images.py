"""Images of a suite's image rows, kept inside the stage directory that writes the rows.

A row of an image task carries ``image``: a path relative to the JSONL file that holds it. Every stage that writes
such rows writes (or copies) their images under its own ``images/``, so a stage directory stays whole when the
stage store moves it (``bench/store.py``): nothing points outside it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any


def render_images(rows: list[dict[str, Any]], d: Path) -> list[dict[str, Any]]:
    """Rows whose ``image_of`` names a task example get its image rendered to ``d/images`` as ``image``; rows of an
    image pool (``image_obj``: its image or file) get it saved there."""
    from tasks import get_task

    out, tasks = [], {}
    for row in rows:
        if "image_obj" in row:  # an image pool's row: a PIL image (hub) or a file path, named by its content
            from PIL import Image

            obj = row["image_obj"]
            img = (Image.open(obj) if isinstance(obj, str) else obj).convert("RGB")
            digest = hashlib.sha256(img.tobytes() + repr(img.size).encode()).hexdigest()[:16]
            name = f"images/{row.get('pool', 'pool')}-{digest}.png"
            if not (d / name).is_file():
                (d / name).parent.mkdir(parents=True, exist_ok=True)
                img.save(d / name)
            out.append({k: v for k, v in row.items() if k != "image_obj"} | {"image": name})
            continue
        ref = row.get("image_of")
        if ref is None:
            out.append(row)
            continue
        task = tasks.setdefault(ref["task"], get_task(ref["task"]))
        by_id = tasks.setdefault((ref["task"], ref["split"]), {ex.id: ex for ex in task.examples(ref["split"])})
        name = f"images/{ref['task']}-{ref['split']}-{ref['id'].replace('/', '_')}.png"
        if not (d / name).is_file():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            task.image(by_id[ref["id"]]).save(d / name)
        out.append({k: v for k, v in row.items() if k != "image_of"} | {"image": name})
    return out


def image_path(row: dict[str, Any], base: Path) -> str | None:
    """The absolute path of a row's image (None for a text row)."""
    return str((base / row["image"]).resolve()) if row.get("image") else None


def copy_images(rows: list[dict[str, Any]], src: Path, d: Path) -> list[dict[str, Any]]:
    """Rows read from a file in ``src`` whose images are copied under ``d/images`` (the same relative names)."""
    for row in rows:
        if row.get("image"):
            target = d / row["image"]
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / row["image"], target)
    return rows
