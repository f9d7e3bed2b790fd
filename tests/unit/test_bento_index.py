"""The model -> Bento index (lib/governance/bento.py): what a rollback's `bento` step reads to
find the restored version's validated Bento. A damaged index never stops a promotion."""

from __future__ import annotations

from mlops_assets.lib.governance import bento


def test_the_index_finds_recorded_bentos_in_the_store_and_survives_damage(tmp_path):
    home = tmp_path
    (bento.bento_path(home, "svc:v1")).mkdir(parents=True)
    bento.record_bento(home, "model:a", "svc:v1")
    bento.record_bento(home, "model:b", "svc:gone")  # recorded, no longer in the store
    assert bento.bento_of(home, "model:a") == "svc:v1"
    assert bento.bento_of(home, "model:b") is None
    assert bento.bento_of(home, "model:never") is None
    index = home / "bentoml" / bento.INDEX
    for damage in ("{torn", '["a list"]', '{"model:a": 3}'):
        index.write_text(damage)
        assert bento.bento_of(home, "model:a") is None  # a rebuild, not a crash
    bento.record_bento(home, "model:a", "svc:v1")  # a promotion writes it whole again
    assert bento.bento_of(home, "model:a") == "svc:v1"
