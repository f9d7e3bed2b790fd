"""The request model, generated from the dataset contract: the same domains the Pandera
schemas enforce in training (bounds, categories, required values), typed for pydantic so
the service validates every request before anything is scored."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mlops_assets.config import DatasetContract, as_text


def _field_name(column: str) -> str:
    name = re.sub(r"\W", "_", column)
    return f"f_{name}" if name[0].isdigit() else name


def record_model(contract: DatasetContract) -> type[BaseModel]:
    """One input record: every feature, nothing else; NaN/Infinity refused."""
    fields: dict[str, Any] = {}
    for name, spec in contract.categorical.items():
        allowed = tuple(spec.categories) + (tuple(contract.missing_tokens) if spec.nullable else ())
        # A number sent for an integer-coded category (21 for "21") is that category.
        kind: Any = Annotated[Literal[allowed], BeforeValidator(as_text)]  # type: ignore
        if spec.nullable:
            fields[_field_name(name)] = (kind | None, Field(default=None, alias=name))
        else:
            fields[_field_name(name)] = (kind, Field(alias=name))
    for name, spec in contract.numeric.items():
        number = Annotated[float, Field(ge=spec.min, le=spec.max, allow_inf_nan=False)]
        if spec.nullable:
            fields[_field_name(name)] = (number | None, Field(default=None, alias=name))
        else:
            fields[_field_name(name)] = (number, Field(alias=name))
    return create_model(
        f"{contract.name.capitalize()}Record",
        __config__=ConfigDict(extra="forbid", populate_by_name=False, frozen=True),
        **fields,
    )


def request_model(contract: DatasetContract, max_records: int,
                  base: type[BaseModel] | None = None) -> type[BaseModel]:
    """The body of POST /predict: ``{"records": [...]}`` with 1 to ``max_records`` records
    (``base``: the service passes ``bentoml.IODescriptor``, BentoML's input model)."""
    records = Annotated[list[record_model(contract)],  # type: ignore[misc]
                        Field(min_length=1, max_length=max_records)]
    if base is None:
        return create_model("PredictRequest", __config__=ConfigDict(extra="forbid"),
                            records=(records, ...))
    model = create_model("PredictRequest", __base__=base, records=(records, ...))
    model.model_config["extra"] = "forbid"
    model.model_rebuild(force=True)
    return model


class ColumnReader:
    """Validated records -> columns of plain values for ``features.encode`` (missing tokens
    become None, as in training). Built once per contract: the hot path does no lookups."""

    def __init__(self, contract: DatasetContract):
        self.missing = frozenset(contract.missing_tokens)
        self.names = [(_field_name(c), c) for c in contract.features]

    def __call__(self, records: list[BaseModel]) -> dict[str, list]:
        missing = self.missing
        return {
            column: [None if (v := getattr(r, attr)) in missing else v for r in records]
            for attr, column in self.names
        }


class Prediction(BaseModel):
    request_id: str
    probability: float
    label: int
    model_version: str
    variant: Literal["champion", "canary"]


