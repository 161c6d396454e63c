"""Core ML exporter: BufferedState -> torch.export(...).run_decompositions({}) -> ct.convert (iOS 18, ct.StateType).

Core ML stores state in fp16 only; ids are int32 inputs (Core ML has no int64 I/O); outputs are renamed from the
converter's generated names to the contract's (`scores`, ..., `state_out_<name>`). Prediction needs macOS 15+, so on
Linux the exporter checks the structure and `parity.coreml_drift_estimate` estimates the fp16-state drift instead.
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
from toolkit.exporters.common import Exported, first_line, state_output_name, tensor_record
from toolkit.exporters.recipes import Recipe
from toolkit.exporters.statecheck import coreml_state_check
from toolkit.models.contract import BufferedState, EntryPoint, buffer_name

_PRECISION = {"fp32": "FLOAT32", "fp16": "FLOAT16"}


def _ct():
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    _register_alias_as_noop()
    _register_arange_keeps_dtype()
    _register_gather_int_indices()
    return ct


def _register_alias_as_noop() -> None:
    """`aten.alias` (a full-range slice such as q[:, :, 0:K] after run_decompositions) is a no-op in a functional
    graph, but coremltools 9.0 has no converter for it ("Unsupported fx node alias"): map it to its noop."""
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if "alias" not in _TORCH_OPS_REGISTRY.name_to_func_mapping:
        _TORCH_OPS_REGISTRY.set_func_by_name(ops.noop, "alias")


def _register_arange_keeps_dtype() -> None:
    """coremltools 9.0 converts `arange(..., dtype=float32)` to an int32 range and then fails on the float op that
    reads it (e.g. `1.0 / arange(1, K + 1)` -> "reciprocal ... got tensor[10,int32]"): cast the range to the
    requested float dtype after the stock conversion."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import NUM_TO_TORCH_DTYPE
    from coremltools.converters.mil.mil import types

    table = _TORCH_OPS_REGISTRY.name_to_func_mapping
    for name in ("arange", "arange.start", "arange.start_step"):
        orig = table.get(name)
        if orig is None or getattr(orig, "_keeps_dtype", False):
            continue

        def convert(context, node, _orig=orig):
            _orig(context, node)
            want = (node.kwinputs or {}).get("dtype")
            tdt = NUM_TO_TORCH_DTYPE.get(want[0]) if want else None
            if tdt is None or not tdt.is_floating_point:
                return
            res = context[node.name]
            if types.is_float(res.dtype):
                return
            cast = mb.cast(x=res, dtype="fp16" if tdt == torch.float16 else "fp32", name=node.name + "_as_float")
            context.add(cast, torch_name=node.name, override=True)

        convert._keeps_dtype = True
        _TORCH_OPS_REGISTRY.set_func_by_name(convert, name)


def _register_gather_int_indices() -> None:
    """coremltools 9.0 turns `(items != 0).sum(1)` into a float tensor, so `h.gather(1, idx)` (last_real) reaches
    gather_along_axis with float indices and fails: cast float indices to int32 (they hold exact small integers)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.mil import types

    if getattr(_TORCH_OPS_REGISTRY.name_to_func_mapping.get("gather"), "_int_indices", False):
        return

    def gather(context, node):
        x, axis, indices = _get_inputs(context, node)[:3]
        if types.is_float(indices.dtype):
            indices = mb.cast(x=indices, dtype="int32", name=node.name + "_indices")
        context.add(mb.gather_along_axis(x=x, indices=indices, axis=axis, name=node.name))

    gather._int_indices = True
    _TORCH_OPS_REGISTRY.set_func_by_name(gather, "gather")


def coreml_input_dtype(dtype: torch.dtype):
    return np.int32 if not dtype.is_floating_point else np.float32


def structure(spec) -> dict:
    """What can be checked without the Core ML runtime: version, I/O, states, op histogram of `main`."""
    def arr(f):
        t = f.type
        kind = t.WhichOneof("Type")
        if kind == "stateType":
            a = t.stateType.arrayType
        elif kind == "multiArrayType":
            a = t.multiArrayType
        else:
            return {"name": f.name, "kind": kind}
        return {"name": f.name, "shape": [int(x) for x in a.shape],
                "dtype": type(a).ArrayDataType.Name(a.dataType).lower()}

    ops: dict[str, int] = {}
    opset = ""
    if spec.WhichOneof("Type") == "mlProgram":
        fn = spec.mlProgram.functions["main"]
        opset = fn.opset
        for op in fn.block_specializations[fn.opset].operations:
            ops[op.type] = ops.get(op.type, 0) + 1
    return {
        "specification_version": int(spec.specificationVersion),
        "opset": opset,
        "inputs": [arr(f) for f in spec.description.input],
        "outputs": [arr(f) for f in spec.description.output],
        "states": [arr(f) for f in spec.description.state],
        "op_histogram": dict(sorted(ops.items())),
    }


def expected_structure_problems(st: dict, ent: EntryPoint) -> list[str]:
    """I/O names and shapes, states and iOS 18 (spec version >= 9) against the contract."""
    problems = []
    if st["specification_version"] < 9:
        problems.append(f"specification version {st['specification_version']} < 9 (iOS 18 needed for state)")
    want_in = {s.name: list(s.shape) for s in ent.inputs}
    got_in = {f["name"]: f.get("shape") for f in st["inputs"]}
    if want_in != got_in:
        problems.append(f"inputs {got_in} differ from the contract {want_in}")
    want_out = list(ent.outputs) + [state_output_name("coreml", s.name) for s in ent.states]
    got_out = [f["name"] for f in st["outputs"]]
    if got_out != want_out:
        problems.append(f"outputs {got_out} differ from the contract {want_out}")
    want_states = {buffer_name(s.name): list(s.shape) for s in ent.states}
    got_states = {f["name"]: f.get("shape") for f in st["states"]}
    if want_states != got_states:
        problems.append(f"states {got_states} differ from the contract {want_states}")
    for f in st["states"]:
        if f.get("dtype") != "float16":
            problems.append(f"state {f['name']} is {f.get('dtype')}, Core ML supports float16 state only")
    return problems


def _compute_precision(ct, precision: str, entry: EntryPoint):
    """fp32, or fp16 everywhere except the scoring tail: the matmul that makes `scores` and the reshapes after it
    stay fp32, as `models.common.fp32_dot` keeps them in the other runtimes' fp16 graphs (trained scores reach |30-50|,
    where fp16 steps by 0.03 and reorders close candidates)."""
    if precision != "fp16":
        return getattr(ct.precision, _PRECISION[precision])
    if not entry.outputs or entry.outputs[0] != "scores":
        return ct.precision.FLOAT16

    def feeds_first_output(op, depth: int = 0) -> bool:
        block = op.enclosing_block
        outs = list(getattr(block, "outputs", []) or [])
        if not outs or depth > 6:
            return False
        if any(v is outs[0] for v in op.outputs):
            return True
        children = [c for v in op.outputs for c in v.child_ops]
        return bool(children) and all(feeds_first_output(c, depth + 1) for c in children)

    def fp16(op) -> bool:
        return not (op.op_type in _SCORE_TAIL_OPS and feeds_first_output(op))

    return ct.transform.FP16ComputePrecision(op_selector=fp16)


_SCORE_TAIL_OPS = {"matmul", "reshape", "squeeze", "expand_dims", "transpose", "cast", "identity"}


def export_coreml(entry: EntryPoint, recipe: Recipe, out_dir: Path, stem: str, base_check: dict) -> Exported:
    ct = _ct()
    target = recipe.opt("minimum_deployment_target", "iOS18")
    if not hasattr(ct.target, target):
        raise ToolkitError(f"recipe {recipe.name}: unknown minimum_deployment_target '{target}'")
    precision = recipe.opt("compute_precision", "fp32")
    if precision not in _PRECISION:
        raise ToolkitError(f"recipe {recipe.name}: compute_precision must be fp32 or fp16, got '{precision}'")
    if recipe.opt("state_dtype", "fp16") != "fp16":
        raise ToolkitError(f"recipe {recipe.name}: Core ML keeps state in fp16 only (state_dtype = \"fp16\")")
    wrap = BufferedState(entry, expose_states=True).eval()
    with torch.no_grad():
        ep = torch.export.export(wrap, entry.example_inputs(), strict=False).run_decompositions({})
    inputs = [ct.TensorType(name=s.name, shape=s.shape, dtype=coreml_input_dtype(s.dtype)) for s in entry.inputs]
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=s.shape, dtype=np.float16), name=buffer_name(s.name))
              for s in entry.states]
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = ct.PassPipeline.DEFAULT
        if states and precision == "fp16":
            # coremltools 9.0: with fp16 compute, the pass that reorders coreml_update_state next to its producer
            # fails with a KeyError on stateful models ("'common::canonicalize_inplace_pattern' graph pass produces
            # the following error"); it only canonicalises op order, so skip it.
            pipeline.remove_passes({"common::canonicalize_inplace_pattern"})
        wq = recipe.opt("weight_quantization", "none")
        if wq == "int8":
            # inside the conversion pipeline rather than ct.optimize.coreml.linear_quantize_weights afterwards: that
            # re-runs the default pipeline, which brings back the failing pass above
            cfg = ct.optimize.coreml.OptimizationConfig(
                global_config=ct.optimize.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                         granularity="per_channel"))
            pipeline.insert_pass(len(pipeline.passes), "compression::linear_quantize_weights")
            pipeline.set_options("compression::linear_quantize_weights", {"config": cfg})
        elif wq != "none":
            raise ToolkitError(f"recipe {recipe.name}: unknown weight_quantization '{wq}' (valid: none, int8)")
        n_out = len(entry.outputs) + len(entry.states)
        outputs = None  # coremltools' choice; an fp16 model would hand its fp32 scores back as fp16
        if precision == "fp16" and entry.outputs and entry.outputs[0] == "scores":
            outputs = [ct.TensorType(dtype=np.float32)] + [ct.TensorType() for _ in range(n_out - 1)]
        mlm = ct.convert(ep, inputs=inputs, outputs=outputs, states=states or None, convert_to="mlprogram",
                         minimum_deployment_target=getattr(ct.target, target),
                         compute_precision=_compute_precision(ct, precision, entry),
                         pass_pipeline=pipeline, skip_model_load=True)
    spec = mlm.get_spec()
    want_out = list(entry.outputs) + [state_output_name("coreml", s.name) for s in entry.states]
    got_out = [o.name for o in spec.description.output]
    if len(got_out) != len(want_out):
        raise ToolkitError(f"{stem}: Core ML model has {len(got_out)} outputs, contract says {len(want_out)}")
    for old, new in zip(got_out, want_out):
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    weights_dir = mlm.weights_dir
    mlm = ct.models.MLModel(spec, weights_dir=weights_dir, skip_model_load=True)
    path = out_dir / f"{stem}.mlpackage"
    mlm.save(str(path))
    spec = mlm.get_spec()
    check = coreml_state_check(entry, base_check, spec)
    st = structure(spec)
    record = {
        "inputs": [tensor_record(s.name, s.shape, "int32" if not s.dtype.is_floating_point else s.dtype, s.high)
                   for s in entry.inputs],
        "compute_precision": precision,
        "weight_quantization": wq,
        "state_dtype": "float16",
        "state_names": {s.name: buffer_name(s.name) for s in entry.states},
        "state_outputs": [state_output_name("coreml", s.name) for s in entry.states],
        "compute_units": recipe.opt("compute_units", "CPU_AND_NE"),
        "structure": st,
        "structure_problems": expected_structure_problems(st, entry),
    }
    return Exported(model_file=path, record=record, state_check=check, reference_entry=entry)


def read_structure(path: Path) -> dict:
    """Spec of a saved .mlpackage (works on Linux: no compilation, no prediction)."""
    ct = _ct()
    try:
        mlm = ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as e:  # coremltools raises several types for a damaged package
        raise ToolkitError(f"cannot read Core ML package {path.name}: {first_line(e)}") from None
    return structure(mlm.get_spec())
