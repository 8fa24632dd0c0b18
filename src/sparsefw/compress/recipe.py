"""Rebuild a compressed architecture from the original one, to load a compressed checkpoint.

    compressed, recipe = remove_filters(model, 0.5, x, return_recipe=True)
    torch.save(compressed.state_dict(), "c.pt"); json.dump(recipe, open("c.json", "w"))
    ...
    fresh = rebuild(build_original(), json.load(open("c.json")))
    fresh.load_state_dict(torch.load("c.pt", weights_only=True))

A recipe is a JSON-able dict: its "kind" names the function that made it ("prune",
"remove_filters", "factorize") and it holds the structural choices (kept filter indices, border
corrections, ranks; for coupled removal the kept indices of every sliced tensor); the values come
from the state_dict.
"""
from __future__ import annotations

import copy

from torch import nn

from .factorize import rebuild_factorized
from .filters import rebuild_removed_filters

_KINDS = {"prune": lambda model, recipe: copy.deepcopy(model),
          "remove_filters": rebuild_removed_filters,
          "factorize": rebuild_factorized}
_FIELDS = {"prune": (), "remove_filters": ("filters", "border", "input_shapes", "input_dtypes"),
           "factorize": ("ranks",), "remove_filters coupled": ("slices",)}


def rebuild(model: nn.Module, recipe: dict) -> nn.Module:
    """A new module with the compressed architecture described by `recipe` (model untouched)."""
    if not isinstance(recipe, dict) or recipe.get("kind") not in _KINDS:
        kind = recipe.get("kind") if isinstance(recipe, dict) else recipe
        raise ValueError(f"recipe must be a dict with kind in {sorted(_KINDS)}, got {kind!r}")
    fields = _FIELDS[recipe["kind"] + (" coupled" if recipe.get("coupled") else "")]
    missing = [f for f in fields if f not in recipe]
    if missing:
        raise ValueError(f"{recipe['kind']!r} recipe lacks the field(s) {missing}: not a recipe written by "
                         f"sparsefw.compress.{recipe['kind']}(..., return_recipe=True)")
    return _KINDS[recipe["kind"]](model, recipe)
