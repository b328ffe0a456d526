"""The local engines (servers/local_endpoint.py) for real: each answers over HTTP, under a cache identity of its own."""

from __future__ import annotations

import pytest

from instructzero.flows.params import build_config
from instructzero.servers.local_endpoint import start_own_server
from instructzero.tasks.evaluation.blackbox import BlackBoxClient, BlackBoxSettings, InMemoryResponseCache
from instructzero.tasks.generation.model_assets import PACKAGED_SMOLLM2

PROMPT = "Instruction: Classify the sentiment as positive or negative.\n\nInput: a wonderful film\nOutput:"


@pytest.mark.slow
def test_the_bf16_engine_answers_over_http_and_is_cached_apart_from_float32() -> None:
    """transformers-bf16 serves the packaged model in bfloat16; a client keyed by the endpoint's identity sends the
    same prompt to it and to float32, and the two answers are two cache entries: they never mix in the ledger."""
    answers, hashes, identities = {}, {}, {}
    cache = InMemoryResponseCache()
    for kind in ("transformers", "transformers-bf16"):
        endpoint = start_own_server(kind, model=PACKAGED_SMOLLM2, max_batch=2)
        try:
            backend = endpoint._handle.app.state.backend
            assert str(backend.model.dtype) == ("torch.bfloat16" if kind.endswith("bf16") else "torch.float32")
            settings = BlackBoxSettings.at(
                endpoint.base_url, model=endpoint.model, endpoint_id=endpoint.endpoint_id, max_tokens=8, stop=("\n",)
            )
            [call] = BlackBoxClient(settings, cache=cache).complete_many_sync([PROMPT])
        finally:
            endpoint.stop()
        assert call.is_answer and not call.cached and call.text.strip(), call
        answers[kind], hashes[kind], identities[kind] = call.text, call.request_hash, endpoint.endpoint_id
    assert identities == {
        "transformers": f"local:transformers:{PACKAGED_SMOLLM2}",
        "transformers-bf16": f"local:transformers-bf16:{PACKAGED_SMOLLM2}",
    }
    assert hashes["transformers"] != hashes["transformers-bf16"]
    print(f"\nfloat32 {answers['transformers']!r}, bfloat16 {answers['transformers-bf16']!r}")


def test_a_run_on_the_bf16_engine_records_its_own_identity() -> None:
    """`--engine transformers-bf16` is a recorded setting, and the embedded black box's cache identity names it."""
    config = build_config(black_box={"engine": "transformers-bf16"})
    settings = config.black_box.client_settings("http://127.0.0.1:4321/v1")
    assert config.recorded()["black_box"]["engine"] == "transformers-bf16"
    assert settings.endpoint_id == f"local:transformers-bf16:{config.black_box.model}"
    default = build_config().black_box.client_settings("http://127.0.0.1:4321/v1")
    assert settings.request_params()["endpoint"] != default.request_params()["endpoint"]
