"""Deployment: the champion packaged as an immutable Bento."""

from pathlib import Path

import dagster as dg

from mlops_assets.defs.governance.assets import champion
from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib.bento import build_bento


@dg.asset(group_name="deployment", kinds={"bentoml"}, deps=[champion], pool="promotion")
def bento(project: ProjectResource) -> dg.MaterializeResult:
    """An immutable Bento of the serving code and the registry's champion (after a promotion
    or a rollback); `bentoml serve <tag>` runs it."""
    registry = project.registry()
    tag = registry.champion()  # the registry is the one record of which model is live
    if tag is None:
        raise ValueError("no champion in the registry yet: nothing to package")
    # The Bento carries the contract the model was trained with, whatever file it came from.
    built = build_bento(project.paths.home, tag, registry.load(tag).contract)
    model_dir = Path(registry.get(tag).path)
    model_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built.tag,
            "model_tag": tag,
            "bento_bytes": built.size_bytes,
            "model_bytes": model_bytes,
            "build_seconds": round(built.seconds, 2),
            "bento_path": dg.MetadataValue.path(str(built.path)),
            "serve": dg.MetadataValue.md(
                f"```\nBENTOML_HOME={registry.bentoml_home} bentoml serve {built.tag}\n```"
            ),
        }
    )
