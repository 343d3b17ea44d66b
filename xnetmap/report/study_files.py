"""Everything a study writes into its output folder: reports and the fitted maps.

The maps are outputs, not cache internals: each ordered pair's map is copied
from the cache to ``OUT/maps/<A>__to__<B>.npz`` (ready for ``xnetmap stitch``)
and the reports list that path.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..fsutil import atomic_write_bytes, make_output_dir
from ..study.maps import map_file_name
from ..study.table import Study
from .writer import write_reports


def copy_maps(study: Study, map_files: dict, out: Path) -> tuple[Study, dict[str, Path]]:
    """Copy each pair's map from the cache into ``out/maps``; the study then points there."""
    written: dict[str, Path] = {}
    pairs = []
    for pair in study.pairs:
        src = map_files.get((pair.source, pair.target))
        if src is None:
            pairs.append(pair)
            continue
        dst = out / "maps" / map_file_name(pair.source, pair.target)
        data = Path(src).read_bytes()
        if not dst.is_file() or dst.read_bytes() != data:
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dst, data)
        written[f"maps/{dst.name}"] = dst
        pairs.append(replace(pair, map_path=str(dst)))
    return replace(study, pairs=pairs), written


def write_study(study: Study, map_files: dict, out_dir: str | os.PathLike,
                **report_options) -> dict[str, Path]:
    """Write the study's maps and reports into ``out_dir``.

    ``report_options`` go to :func:`write_reports` (``loss_range``, ``formats``, ...).

    Returns
    -------
    dict
        File name (relative to ``out_dir``) -> path written.
    """
    out = make_output_dir(out_dir, "report folder")
    study, written = copy_maps(study, map_files, out)
    return {**write_reports(study, out, **report_options), **written}
