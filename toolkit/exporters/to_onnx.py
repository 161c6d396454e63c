"""ONNX exporter: the *functional* entry point, states lifted to `state_in.*` inputs and `state_out.*` outputs.

torch.onnx.export(dynamo=True) drops in-place buffer updates without a warning (export.md), so the stateful
wrapper is never exported here; the runner feeds state_out back as state_in between calls.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from toolkit.errors import ToolkitError
from toolkit.exporters.common import STATE_IN, STATE_OUT, Exported, cast_entry, tensor_record, to_numpy
from toolkit.models.contract import EntryPoint
from toolkit.exporters.recipes import Recipe
from toolkit.exporters.statecheck import onnx_state_check

ORT_LEVELS = ("disable", "basic", "extended", "all")


def _export_quietly(module, args, path: Path, input_names, output_names, opset: int) -> None:
    """torch.onnx's dynamo exporter prints progress lines; keep them out of the CLI output (errors still raise)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, None, dynamo=True, input_names=input_names,
                                 output_names=output_names, opset_version=opset, optimize=True, verbose=False)
        prog.save(str(path))


def export_onnx(entry: EntryPoint, recipe: Recipe, out_dir: Path, stem: str, base_check: dict) -> Exported:
    import onnx

    ent = cast_entry(entry, recipe.opt("compute_dtype", "fp32"))
    level = recipe.opt("optimization_level", "all")
    if level not in ORT_LEVELS:
        raise ToolkitError(f"recipe {recipe.name}: optimization_level '{level}' not in {', '.join(ORT_LEVELS)}")
    opset = int(recipe.opt("opset", 18))
    names_in = [s.name for s in ent.inputs] + [STATE_IN + s.name for s in ent.states]
    names_out = list(ent.outputs) + [STATE_OUT + s.name for s in ent.states]
    args = ent.example_inputs() + ent.initial_states()
    path = out_dir / f"{stem}.onnx"
    quant = recipe.opt("quantize", "none")
    with torch.no_grad():
        if quant == "none":
            _export_quietly(ent.module.eval(), args, path, names_in, names_out, opset)
        elif quant == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = out_dir / f".{stem}.fp32.onnx"
            _export_quietly(ent.module.eval(), args, fp32, names_in, names_out, opset)
            root = logging.getLogger()
            root_level = root.level
            root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" warning through the root logger
            try:
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(root_level)
            fp32.unlink()
        else:
            raise ToolkitError(f"recipe {recipe.name}: unknown quantize '{quant}' (valid: none, int8-dynamic)")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    check = onnx_state_check(ent, base_check, model)
    extra = {}
    if ent.states:
        init_path = out_dir / f"{stem}.initial_state.npz"
        np.savez(init_path, **{s.name: to_numpy(s.initial) for s in ent.states})
        extra["initial_state"] = init_path
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    record = {
        "inputs": [tensor_record(s.name, s.shape, s.dtype, s.high) for s in ent.inputs],
        "opset": opset,
        "ort_optimization_level": level,
        "state_inputs": [STATE_IN + s.name for s in ent.states],
        "state_outputs": [STATE_OUT + s.name for s in ent.states],
        "op_histogram": dict(sorted(ops.items())),
    }
    return Exported(model_file=path, extra_files=extra, record=record, state_check=check, reference_entry=ent)
