"""The trained model as one scoring object, and its artifact on disk.

An artifact directory holds what the training library itself saves
(``model.txt`` for LightGBM, ``model.joblib`` for scikit-learn) beside the
preprocessing and calibration as JSON, and ``model.json`` describing it all
with a SHA-256 per file. :meth:`ScoringModel.load` verifies those hashes.

>>> m = ScoringModel.load(path)                                   # doctest: +SKIP
>>> m.features            # the columns predict_proba needs
['ctx__position', 'item__category', 'user_activity__count_1d', ...]
>>> m.predict_proba(table)  # calibrated P(label = 1), one per row
array([0.031, 0.004, ...])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clickloop.errors import DataError
from clickloop.training.calibration import Calibrator
from clickloop.training.estimators import Estimator
from clickloop.training.preprocess import Preprocessor
from clickloop.training.request import request_columns

FORMAT = "clickloop-model/1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ScoringModel:
    """Everything needed to score: estimator, preprocessing, calibration, and what to fetch."""

    name: str
    estimator: Estimator
    preprocessor: Preprocessor
    calibrator: Calibrator
    entity: str = "user_id"
    feature_sets: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    url_fields: bool = False
    threshold: float = 0.5
    version: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    knowledge: Any = None  # URL knowledge for request columns (set by the loader)

    @property
    def features(self) -> list[str]:
        """Input columns ``predict_proba`` reads (feature-set, request and cross inputs)."""
        return self.preprocessor.inputs

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.version is not None else self.name

    def predict_proba(self, table: pa.Table) -> np.ndarray:
        """Calibrated probability of the positive class for each row (shape ``(n,)``)."""
        matrix = self.preprocessor.transform(table)
        return self.calibrator.transform(self.estimator.predict(matrix))

    def predict(self, table: pa.Table) -> np.ndarray:
        """Decisions at the threshold chosen in training."""
        return self.predict_proba(table) >= self.threshold

    def request_columns(self, requests: pa.Table) -> pa.Table:
        """Request-time features (context, URL fields) from raw requests or examples."""
        return request_columns(
            requests, self.context, url_fields=self.url_fields, knowledge=self.knowledge
        )

    # -- artifact -----------------------------------------------------------------------

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the artifact files into ``directory``; return the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        model_file = self.estimator.save(directory)
        _write_json(directory / "preprocess.json", self.preprocessor.to_dict())
        _write_json(directory / "calibration.json", self.calibrator.to_dict())
        files = {
            n: sha256(directory / n) for n in (model_file, "preprocess.json", "calibration.json")
        }
        manifest = {
            "format": FORMAT,
            "name": self.name,
            "algorithm": self.estimator.kind,
            "params": self.estimator.params,
            "model_file": model_file,
            "entity": self.entity,
            "feature_sets": self.feature_sets,
            "context": self.context,
            "url_fields": self.url_fields,
            "features": self.features,
            "threshold": self.threshold,
            "files": files,
            "meta": self.meta,
        }
        _write_json(directory / "model.json", manifest)
        return manifest

    @classmethod
    def load(cls, directory: Path, *, version: int | None = None) -> ScoringModel:
        directory = Path(directory)
        try:
            manifest = json.loads((directory / "model.json").read_text())
        except FileNotFoundError:
            raise DataError(f"{directory} holds no model (model.json is missing)") from None
        if manifest.get("format") != FORMAT:
            raise DataError(
                f"{directory}: unknown model format {manifest.get('format')!r}",
                hint="upgrade clickloop to read this artifact",
            )
        for name, digest in manifest["files"].items():
            if not (directory / name).exists() or sha256(directory / name) != digest:
                raise DataError(
                    f"{directory / name} is missing or corrupt (checksum mismatch)",
                    hint="re-register the model version",
                )
        est = Estimator.load(
            manifest["algorithm"], directory / manifest["model_file"], manifest.get("params", {})
        )
        return cls(
            name=manifest["name"],
            estimator=est,
            preprocessor=Preprocessor.from_dict(
                json.loads((directory / "preprocess.json").read_text())
            ),
            calibrator=Calibrator.from_dict(
                json.loads((directory / "calibration.json").read_text())
            ),
            entity=manifest["entity"],
            feature_sets=manifest["feature_sets"],
            context=manifest["context"],
            url_fields=manifest["url_fields"],
            threshold=manifest["threshold"],
            version=version,
            meta=manifest.get("meta", {}),
        )


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
