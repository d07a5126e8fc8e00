"""The Triton client's own message handling: scores from raw output contents, and the
translation of gRPC status codes into the gateway's errors (the calls themselves run against a
real tritonserver in the integration tests)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from gateway.errors import InferenceFailed, InferenceTimeout, InferenceUnavailable
from gateway.triton import _scores, _translate


def response(*outputs: tuple[str, str, bytes]) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(
        model_name="m",
        model_version="1",
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype)
            for name, datatype, _ in outputs
        ],
        raw_output_contents=[raw for _, _, raw in outputs],
    )


def test_one_output_becomes_one_column_per_row() -> None:
    raw = np.array([0.25, 0.5, 0.75], dtype=np.float32).tobytes()
    scores = _scores(response(("p", "FP32", raw)), ("p",), 3)
    assert scores.shape == (3, 1)
    assert scores[:, 0].tolist() == [0.25, 0.5, 0.75]


def test_outputs_are_ordered_as_the_spec_declares_not_as_triton_sends_them() -> None:
    a = np.array([1.0, 2.0], dtype=np.float32).tobytes()
    b = np.array([10.0, 20.0], dtype=np.float64).tobytes()
    scores = _scores(response(("b", "FP64", b), ("a", "FP32", a)), ("a", "b"), 2)
    assert scores.tolist() == [[1.0, 10.0], [2.0, 20.0]]


@pytest.mark.parametrize(
    ("answer", "names", "n_rows"),
    [
        (response(("other", "FP32", np.zeros(2, np.float32).tobytes())), ("p",), 2),
        (response(("p", "BYTES", b"\x01\x00\x00\x00a")), ("p",), 1),
        (response(("p", "FP32", np.zeros(3, np.float32).tobytes())), ("p",), 2),
        (
            pb.ModelInferResponse(
                outputs=[pb.ModelInferResponse.InferOutputTensor(name="p", datatype="FP32")]
            ),
            ("p",),
            1,
        ),
    ],
    ids=["missing-output", "unsupported-datatype", "wrong-row-count", "no-raw-contents"],
)
def test_an_answer_that_does_not_match_the_spec_is_refused(
    answer: pb.ModelInferResponse, names: tuple[str, ...], n_rows: int
) -> None:
    with pytest.raises(ValueError, match="output"):
        _scores(answer, names, n_rows)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", InferenceTimeout),
        (grpc.StatusCode.UNAVAILABLE, "Request timeout expired", InferenceTimeout),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", InferenceUnavailable),
        (grpc.StatusCode.NOT_FOUND, "Request for unknown model", InferenceUnavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", InferenceUnavailable),
        (grpc.StatusCode.CANCELLED, None, InferenceUnavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape", InferenceFailed),
        (grpc.StatusCode.INTERNAL, "backend error", InferenceFailed),
    ],
)
def test_grpc_status_codes_map_to_gateway_errors(
    code: grpc.StatusCode, message: str | None, expected: type[Exception]
) -> None:
    assert type(_translate(code, message)) is expected
