"""The calibration: a logistic regression from support features to the probability that a claim is supported,
its decision thresholds, and how it was fitted. Saved as JSON next to the code (grounding/calibration.json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from colbert_att_assistant.grounding.alignment import TokenWeighting
from colbert_att_assistant.grounding.features import FEATURE_NAMES

DEFAULT_CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"


class AlignmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weighting: TokenWeighting = TokenWeighting.EXP_A_CONTENT
    strong_threshold: float = Field(default=0.7, gt=0, lt=1, description="Cosine at which a token match is strong.")


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature_names: list[str]
    coefficients: list[float]
    intercept: float
    threshold: float = Field(gt=0, lt=1, description="A claim is supported at or above this probability.")
    answer_threshold: float = Field(
        gt=0, lt=1, description="An answer is supported when the mean of its claims' support reaches this."
    )
    contradiction_cap: float = Field(
        gt=0,
        lt=1,
        description="Support cap of a claim failing an exact check (missing figure or name, flipped negation).",
    )
    alignment: AlignmentSettings = Field(default_factory=AlignmentSettings)
    regularization_c: float = Field(
        default=1.0, gt=0, description="Inverse regularisation strength of the fit, chosen by CV on the fit part."
    )
    encoder: str = Field(description="Encoder the features were computed with (model name and weights sha256).")
    fitted_on: str = Field(description="Data the regression and thresholds were fitted on.")
    held_out: dict[str, float] = Field(default_factory=dict, description="Held-out metrics measured after fitting.")

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if len(self.coefficients) != len(self.feature_names):
            raise ValueError(
                f"{len(self.coefficients)} coefficients for {len(self.feature_names)} features: they must pair up."
            )
        if tuple(self.feature_names) != FEATURE_NAMES:
            raise ValueError(
                f"feature_names {self.feature_names} differ from the code's features {list(FEATURE_NAMES)}."
            )
        if self.contradiction_cap >= self.threshold:
            raise ValueError("contradiction_cap must be below threshold, or a contradicted claim could pass.")
        return self

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Probability of support for rows of features (n, len(feature_names)) or one row."""
        logits = np.asarray(features, dtype=np.float64) @ np.asarray(self.coefficients) + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: Path = DEFAULT_CALIBRATION_PATH) -> Path:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def load_calibration(path: Path = DEFAULT_CALIBRATION_PATH) -> Calibration:
    if not path.is_file():
        raise FileNotFoundError(
            f"No calibration at {path}: fit one with `python -m colbert_att_assistant.evals.grounding_wixqa --fit`."
        )
    return Calibration.model_validate_json(path.read_text(encoding="utf-8"))
