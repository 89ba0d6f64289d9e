"""Registries of the pluggable parts: register/resolve/names, config names checked through them without
torch, and the operators' parameters (state-dict keys, shapes, identity start) that checkpoints rely on."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from builders import REPO, child_env, make_config

from tbg.config import ConfigError, parse_config
from tbg.model.comparators import COMPARATORS
from tbg.model.losses import LOSSES
from tbg.model.operators import OPERATORS
from tbg.model.scoring import RelationModel
from tbg.registry import Registry


def test_register_resolve_names() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("plain")
    class Plain:
        pass

    @reg.register("fancy")
    class Fancy:
        pass

    assert reg.names() == ("plain", "fancy")
    assert reg.resolve("fancy") is Fancy and Fancy.name == "fancy"
    assert "plain" in reg and "other" not in reg
    assert reg.register("plain")(Plain) is Plain  # registering the same class again is harmless
    with pytest.raises(ValueError, match=r"widget 'plain' is already registered"):
        reg.register("plain")(type("Other", (), {}))
    with pytest.raises(ValueError, match=r"^unknown widget 'nope' \(choices: plain, fancy\)$"):
        reg.resolve("nope")


def test_builtin_names_in_config_order() -> None:
    assert OPERATORS.names() == ("none", "translation", "diagonal", "linear", "affine", "complex_diagonal")
    assert COMPARATORS.names() == ("dot", "cos", "l2", "squared_l2")
    assert LOSSES.names() == ("logistic", "ranking", "softmax")


def test_config_and_declarations_import_without_torch() -> None:
    """The config checks names and export reads operator layouts from these modules: none may load torch."""
    code = (
        "import sys, tbg.config, tbg.export, tbg.model.operators, tbg.model.comparators, tbg.model.losses; "
        "tbg.config.parse_config(__import__('yaml').safe_load(open(sys.argv[1])), 'seed'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    seed = REPO / "configs" / "twhin_seed.yaml"
    res = subprocess.run([sys.executable, "-c", code, str(seed)], capture_output=True, text=True, env=child_env())
    assert res.returncode == 0, res.stderr


def test_operator_dim_rule_comes_from_the_operator(tmp_path) -> None:
    data = yaml.safe_load(yaml.safe_dump(make_config(tmp_path / "graph").to_dict()))
    data["model"]["embeddings"]["tables"][0]["embedding_dim"] = 5
    data["model"]["relations"][1]["operator"] = "complex_diagonal"
    with pytest.raises(ConfigError, match=r"model.relations\[1\].operator: complex_diagonal needs an even"
                       r" embedding_dim, got 5$"):  # fmt: skip
        parse_config(data, "c.yaml")


KEYS = {  # the checkpoint format (relations.h5 and what every version of tbg wrote): name -> padded shape
    "translation": (6, 8),
    "diagonal": (6, 8),
    "linear": (6, 8, 8),
    "real": (6, 4),
    "imag": (6, 4),
}


@pytest.mark.parametrize("sides", ["both", "rhs"])
def test_state_dict_keys_shapes_and_identity_start(sides: str) -> None:
    kinds = list(OPERATORS.names())
    model = RelationModel(kinds, [8, 8, 8, 8, 8, 6], "dot", sides)
    prefixes = ["rhs_operators"] + (["lhs_operators"] if sides == "both" else [])
    want = {f"{p}.{k}": shape for p in prefixes for k, shape in KEYS.items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want
    assert list(model.rhs_operators.state_dict()) == list(KEYS)  # the order the relation optimizer's state uses
    x = torch.randn(6, 8)
    x[5, 6:] = 0  # relation 5 is 6-dim
    rel = torch.arange(6)
    assert torch.allclose(model.rhs_operators(x, rel), x)
    exported = model.export_relation(5)
    assert {k: tuple(v.shape) for k, v in exported.items() if k.startswith("rhs.")} == {
        "rhs.real": (3,),
        "rhs.imag": (3,),
    }


def test_only_used_parameters_exist() -> None:
    model = RelationModel(["affine", "none"], [4, 4], "dot", "rhs")
    assert list(model.state_dict()) == ["rhs_operators.translation", "rhs_operators.linear"]
