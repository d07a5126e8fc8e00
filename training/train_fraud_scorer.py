"""Train the fraud_scorer MLP on synthetic transactions and ship it as a standard-ops ONNX graph.

    python -m training.train_fraud_scorer                 # write the shipped artifacts
    python -m training.train_fraud_scorer --check         # retrain in a temp dir, compare
    python -m training.train_fraud_scorer --output-dir D  # write everything under D instead

The ONNX graph is assembled by hand from the fitted weights (Mul, Relu, Add, Log, MatMul,
Sigmoid: all in the default ``ai.onnx`` domain) instead of skl2onnx's converter, whose
Scaler/ZipMap ``ai.onnx.ml`` ops would pin the model to ONNX Runtime's CPU provider; production
serves it with the CUDA/TensorRT execution providers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from training.fraud_data import (
    DEMO_SEED,
    FEATURE_NAMES,
    INTEGER_FEATURES,
    N_FEATURES,
    TRAINING_SEED,
    Transactions,
    generate_card_states,
    generate_transactions,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_RELPATH = Path("model_repository/fraud_scorer/1/model.onnx")
METRICS_RELPATH = Path("training/fraud_scorer_metrics.json")
DEMO_RELPATH = Path("data/demo/card_features.csv")

INPUT_NAME = "features"
OUTPUT_NAME = "fraud_probability"

N_ROWS = 200_000
HELD_OUT_FRACTION = 0.2
N_DEMO_CARDS = 10_000
RANDOM_STATE = 7

# Opset 17 with IR version 8 loads in every ONNX Runtime since 1.12, including the one inside
# Triton 2.51's onnxruntime backend; newer IR versions would be refused there.
OPSET = 17
IR_VERSION = 8
PRODUCER_NAME = "triton-inference-gateway.training"
PRODUCER_VERSION = "1"

# Heavy-tailed, non-negative columns enter the network as log1p(x): amounts span six orders
# of magnitude and standardising raw values would squash the common range into ~0.
LOG1P_FEATURES: frozenset[str] = frozenset(
    {
        "amount",
        "distance_from_home_km",
        "distance_from_last_txn_km",
        "txn_count_1h",
        "txn_count_24h",
        "avg_amount_30d",
        "account_age_days",
        "failed_auth_24h",
        "chargebacks_365d",
    }
)

# A regenerated artifact must match the shipped one bit for bit (same pinned versions, single
# BLAS thread). Where it cannot (another CPU's BLAS kernels round differently), predictions on
# the held-out set must still agree to this absolute tolerance.
PREDICTION_TOLERANCE = 1e-6

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Split:
    """Train and held-out rows; the held-out rows are the generator's last 20 %."""

    x_train: FloatArray
    y_train: NDArray[np.int8]
    x_held_out: FloatArray
    y_held_out: NDArray[np.int8]


@dataclass(frozen=True)
class Artifacts:
    """Where one training run wrote its outputs."""

    model: Path
    metrics: Path
    demo: Path


def load_split(n_rows: int = N_ROWS, seed: int = TRAINING_SEED) -> Split:
    """Generate the data set and split it; rows are i.i.d., so a positional split is fair."""
    data: Transactions = generate_transactions(n_rows, seed)
    n_train = round(n_rows * (1.0 - HELD_OUT_FRACTION))
    return Split(
        x_train=data.features[:n_train],
        y_train=data.is_fraud[:n_train],
        x_held_out=data.features[n_train:],
        y_held_out=data.is_fraud[n_train:],
    )


def log1p_mask() -> FloatArray:
    """1.0 for columns that are log1p-transformed, 0.0 for columns passed through."""
    return np.array([1.0 if name in LOG1P_FEATURES else 0.0 for name in FEATURE_NAMES])


def transform(features: FloatArray) -> FloatArray:
    """The numpy twin of the graph's input transform (used for training only)."""
    mask = log1p_mask()
    transformed: FloatArray = np.log1p(np.maximum(features * mask, 0.0)) + features * (1.0 - mask)
    return transformed


def fit_mlp(split: Split) -> tuple[StandardScaler, MLPClassifier]:
    """Fit scaler and MLP; one BLAS thread so the floating-point summation order is fixed."""
    with threadpool_limits(limits=1):
        z_train = transform(split.x_train)
        scaler = StandardScaler().fit(z_train)
        mlp = MLPClassifier(
            hidden_layer_sizes=(32, 16),
            activation="relu",
            alpha=1e-4,
            batch_size=512,
            learning_rate_init=2e-3,
            max_iter=40,
            random_state=RANDOM_STATE,
        )
        # The epoch budget is fixed on purpose (time and reproducibility); sklearn warns when
        # the loss is still moving at max_iter, which is expected here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(scaler.transform(z_train), split.y_train)
    return scaler, mlp


def fit_baseline(split: Split) -> FloatArray:
    """Logistic regression on the same transformed, standardised inputs; held-out scores."""
    with threadpool_limits(limits=1):
        scaler = StandardScaler().fit(transform(split.x_train))
        model = LogisticRegression(max_iter=1000)
        model.fit(scaler.transform(transform(split.x_train)), split.y_train)
        scores: FloatArray = model.predict_proba(scaler.transform(transform(split.x_held_out)))
    return scores[:, 1]


def build_onnx(scaler: StandardScaler, mlp: MLPClassifier) -> onnx.ModelProto:
    """Assemble the graph: log1p on chosen columns, MLP with the scaler folded into layer 1."""
    weights, biases = _fold_scaler(scaler, mlp)
    mask = log1p_mask()
    initializers = [
        _const("log_mask", mask.reshape(1, -1)),
        _const("pass_mask", (1.0 - mask).reshape(1, -1)),
        _const("one", np.ones((1, 1))),
    ]
    nodes = [
        helper.make_node("Mul", [INPUT_NAME, "log_mask"], ["masked"]),
        # Relu keeps Log defined for out-of-range negatives; the gateway already rejects them.
        helper.make_node("Relu", ["masked"], ["masked_nonneg"]),
        helper.make_node("Add", ["masked_nonneg", "one"], ["masked_plus_one"]),
        helper.make_node("Log", ["masked_plus_one"], ["logged"]),
        helper.make_node("Mul", [INPUT_NAME, "pass_mask"], ["passed"]),
        helper.make_node("Add", ["logged", "passed"], ["h0"]),
    ]
    layer_input = "h0"
    for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        initializers += [_const(f"W{index}", weight), _const(f"b{index}", bias.reshape(1, -1))]
        nodes += [
            helper.make_node("MatMul", [layer_input, f"W{index}"], [f"mm{index}"]),
            helper.make_node("Add", [f"mm{index}", f"b{index}"], [f"z{index}"]),
        ]
        is_last = index == len(weights) - 1
        layer_input = f"h{index + 1}"
        nodes.append(
            helper.make_node("Sigmoid" if is_last else "Relu", [f"z{index}"], [layer_input])
        )
    nodes.append(helper.make_node("Identity", [layer_input], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        "fraud_scorer",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string="Card-transaction fraud probability; input columns: " + ",".join(FEATURE_NAMES),
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _fold_scaler(
    scaler: StandardScaler, mlp: MLPClassifier
) -> tuple[list[FloatArray], list[FloatArray]]:
    """(z - mean) / scale @ W + b == z @ (W / scale) + (b - (mean / scale) @ W); saves two ops."""
    weights = [np.asarray(w, dtype=np.float64) for w in mlp.coefs_]
    biases = [np.asarray(b, dtype=np.float64) for b in mlp.intercepts_]
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    first = weights[0]
    weights[0] = first / scale[:, None]
    biases[0] = biases[0] - (mean / scale) @ first
    return weights, biases


def _const(name: str, values: FloatArray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(values, dtype=np.float32), name=name)


def predict_onnx(model_path: Path, features: FloatArray) -> NDArray[np.float32]:
    """Fraud probabilities [n, 1] from an ONNX file on ONNX Runtime's CPU provider."""
    options = ort.SessionOptions()
    # One thread: deterministic reductions, and no oversubscription on small machines.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    outputs = session.run([OUTPUT_NAME], {INPUT_NAME: features.astype(np.float32)})
    return np.asarray(outputs[0], dtype=np.float32)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_demo_cards(path: Path, n_cards: int = N_DEMO_CARDS, seed: int = DEMO_SEED) -> None:
    """card_id then the 14 features; whole-number and 0/1 columns written as integers."""
    states = generate_card_states(n_cards, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["card_id", *FEATURE_NAMES])
        for row_index, row in enumerate(states):
            writer.writerow([f"card-{row_index + 1:06d}", *_format_row(row)])


def _format_row(row: FloatArray) -> list[str]:
    return [
        str(int(value)) if name in INTEGER_FEATURES else f"{value:.10g}"
        for name, value in zip(FEATURE_NAMES, row, strict=True)
    ]


def train(output_dir: Path) -> Artifacts:
    """One full run: data, MLP, ONNX, metrics, demo CSV, all under ``output_dir``."""
    artifacts = Artifacts(
        model=output_dir / MODEL_RELPATH,
        metrics=output_dir / METRICS_RELPATH,
        demo=output_dir / DEMO_RELPATH,
    )
    split = load_split()
    scaler, mlp = fit_mlp(split)
    artifacts.model.parent.mkdir(parents=True, exist_ok=True)
    artifacts.model.write_bytes(build_onnx(scaler, mlp).SerializeToString())
    scores = predict_onnx(artifacts.model, split.x_held_out)[:, 0]
    baseline = fit_baseline(split)
    metrics = {
        "model": "fraud_scorer",
        "artifact": MODEL_RELPATH.as_posix(),
        "artifact_sha256": sha256_of(artifacts.model),
        "features": list(FEATURE_NAMES),
        "n_train": int(split.y_train.size),
        "n_held_out": int(split.y_held_out.size),
        "fraud_rate": round(float(np.concatenate([split.y_train, split.y_held_out]).mean()), 6),
        "held_out_fraud_rate": round(float(split.y_held_out.mean()), 6),
        "held_out_roc_auc": round(float(roc_auc_score(split.y_held_out, scores)), 6),
        "held_out_pr_auc": round(float(average_precision_score(split.y_held_out, scores)), 6),
        "baseline_logistic_roc_auc": round(float(roc_auc_score(split.y_held_out, baseline)), 6),
        "baseline_logistic_pr_auc": round(
            float(average_precision_score(split.y_held_out, baseline)), 6
        ),
        "mlp_epochs": int(mlp.n_iter_),
        "reproducibility_tolerance": PREDICTION_TOLERANCE,
    }
    artifacts.metrics.parent.mkdir(parents=True, exist_ok=True)
    artifacts.metrics.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_demo_cards(artifacts.demo)
    return artifacts


def compare_with_shipped(candidate: Path, shipped: Path) -> tuple[bool, str]:
    """Bit-for-bit first; otherwise held-out predictions within PREDICTION_TOLERANCE."""
    if not shipped.is_file():
        return False, f"no shipped artifact at {shipped}; run without --check first"
    if sha256_of(candidate) == sha256_of(shipped):
        return True, f"bit-for-bit identical (sha256 {sha256_of(shipped)})"
    held_out = load_split().x_held_out
    difference = float(
        np.max(np.abs(predict_onnx(candidate, held_out) - predict_onnx(shipped, held_out)))
    )
    if difference <= PREDICTION_TOLERANCE:
        return True, f"bytes differ; max |Δp| on held-out = {difference:.3g} within tolerance"
    return False, (
        f"regenerated model differs from {shipped}: max |Δp| on held-out = {difference:.3g} "
        f"> tolerance {PREDICTION_TOLERANCE:g}; was the artifact retrained with other versions?"
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_fraud_scorer")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO_ROOT,
        help="root under which model_repository/, training/ and data/ outputs are written",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="retrain into a temporary directory and compare with the shipped artifact",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory(prefix="fraud_scorer_check_") as tmp:
            candidate = train(Path(tmp)).model
            ok, message = compare_with_shipped(candidate, args.output_dir / MODEL_RELPATH)
        print(("OK: " if ok else "FAILED: ") + message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    started = time.perf_counter()
    artifacts = train(args.output_dir)
    elapsed = time.perf_counter() - started
    print(artifacts.metrics.read_text(encoding="utf-8"), end="")
    print(f"wrote {artifacts.model}, {artifacts.metrics}, {artifacts.demo} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
