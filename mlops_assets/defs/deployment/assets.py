"""Deployment: the champion packaged as an immutable Bento."""

from pathlib import Path

import dagster as dg

from mlops_assets.defs.governance.assets import champion
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib.governance.bento import bento_of, bento_path, build_bento, record_bento


@dg.asset(group_name="deployment", kinds={"bentoml"}, deps=[champion], pool="promotion")
def bento(project: ProjectResource) -> dg.MaterializeResult:
    """The champion's immutable Bento (after a promotion or a rollback): the one its
    deploy-time check served (`candidate_bento`), not a rebuild; built here only for a
    champion that has none (one promoted before the check existed). `bentoml serve <tag>`
    runs it."""
    import time

    registry = project.registry()
    tag = registry.champion()  # the registry is the one record of which model is live
    if tag is None:
        raise ValueError("no champion in the registry yet: nothing to package")
    started = time.perf_counter()
    known = bento_of(project.paths.home, tag)
    if known is None:
        # The Bento carries the contract the model was trained with, whatever file it
        # came from.
        built = build_bento(project.paths.home, tag, registry.load(tag).contract)
        record_bento(project.paths.home, tag, built.tag)
        bento_tag, path, size, origin = built.tag, built.path, built.size_bytes, "built here"
    else:
        path = bento_path(project.paths.home, known)
        bento_tag, origin = known, "the Bento its deploy-time check served"
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    model_dir = Path(registry.get(tag).path)
    model_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return dg.MaterializeResult(
        metadata={
            "bento_tag": bento_tag,
            "model_tag": tag,
            "origin": origin,
            "bento_size": dg.MetadataValue.text(f"{size / 2**20:.1f} MiB"),
            "model_size": dg.MetadataValue.text(f"{model_bytes / 2**10:.0f} KiB"),
            "seconds": round(time.perf_counter() - started, 2),
            "bento_path": dg.MetadataValue.path(str(path)),
            "serve": dg.MetadataValue.md(
                f"```\nBENTOML_HOME={registry.bentoml_home} \\\n  bentoml serve {bento_tag}\n```"
            ),
        }
    )
