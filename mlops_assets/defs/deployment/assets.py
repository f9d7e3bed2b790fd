"""Deployment: the champion packaged as an immutable Bento."""

from pathlib import Path

import dagster as dg

from mlops_assets.defs.resources import ProjectResource
from mlops_assets.lib.bento import build_bento


@dg.asset(group_name="deployment", kinds={"bentoml"},
          automation_condition=dg.AutomationCondition.eager())
def bento(champion: dict, project: ProjectResource) -> dg.MaterializeResult:
    """An immutable Bento of the serving code and the champion; `bentoml serve <tag>` runs it."""
    registry = project.registry()
    built = build_bento(project.paths.home, champion["tag"], project.contract().name)
    model_dir = Path(registry.get(champion["tag"]).path)
    model_bytes = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built.tag,
            "model_tag": champion["tag"],
            "bento_bytes": built.size_bytes,
            "model_bytes": model_bytes,
            "build_seconds": round(built.seconds, 2),
            "bento_path": dg.MetadataValue.path(str(built.path)),
            "serve": dg.MetadataValue.md(
                f"```\nBENTOML_HOME={registry.bentoml_home} bentoml serve {built.tag}\n```"
            ),
        }
    )
