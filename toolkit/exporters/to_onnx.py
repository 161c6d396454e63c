"""ONNX exporter: the *functional* entry point, states lifted to `state_in.*` inputs and `state_out.*` outputs.

torch.onnx.export(dynamo=True) drops in-place buffer updates without a warning (docs/export.md §2), so the stateful
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
from toolkit.exporters.recipes import Recipe
from toolkit.exporters.statecheck import onnx_state_check
from toolkit.models.contract import EntryPoint

ORT_LEVELS = ("disable", "basic", "extended", "all")


def _export_quietly(module, args, path: Path, input_names, output_names, opset: int) -> None:
    """torch.onnx's dynamo exporter prints progress lines; keep them out of the CLI output (errors still raise)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, args, None, dynamo=True, input_names=input_names,
                                 output_names=output_names, opset_version=opset, optimize=True, verbose=False)
        prog.save(str(path))


def _int8_tables(path: Path) -> list[dict]:
    """int8 tables + per-row scales as Gather, Cast, Gather, Mul (toolkit.exporters.quant_tables), in place."""
    import onnx

    from toolkit.exporters.quant_tables import rewrite_onnx_model

    model = onnx.load(str(path))
    tables = rewrite_onnx_model(model)
    onnx.save(model, str(path))
    return tables


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
    from toolkit.exporters.quant_tables import check_mode

    emb = check_mode(recipe.opt("embedding", "none"), recipe.name)
    tables = None
    with torch.no_grad():
        if quant == "none":
            _export_quietly(ent.module.eval(), args, path, names_in, names_out, opset)
            if emb == "int8":
                tables = _int8_tables(path)
        elif quant == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = out_dir / f".{stem}.fp32.onnx"
            _export_quietly(ent.module.eval(), args, fp32, names_in, names_out, opset)
            if emb == "int8":  # before the MatMul quantization, which would give the table one per-tensor scale
                tables = _int8_tables(fp32)
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
    if tables is not None:
        record["embedding_quantization"] = emb
        record["quantized_tables"] = tables
    return Exported(model_file=path, extra_files=extra, record=record, state_check=check, reference_entry=ent)


# ---- the ORT mobile form and ORT's mobile usability verdict (onnxruntime's own tools, as libraries) ------------------

ORT_CONVERTER = "onnxruntime.tools.convert_onnx_models_to_ort"
ORT_USABILITY = "onnxruntime.tools.check_onnx_model_mobile_usability (mobile_helpers.usability_checker)"
ORT_TARGET_PLATFORM = "arm"  # phones: the converter leaves out x86-only layouts (NCHWc) and allows int8 QDQ on ARM
USABILITY_EPS = (("NNAPI", None), ("CoreML NeuralNetwork", "coreml_supported_neuralnetwork_ops.md"),
                 ("CoreML MLProgram", "coreml_supported_mlprogram_ops.md"))


@contextlib.contextmanager
def _ort_tool_quiet():
    """ORT's tools print progress to stdout and log INFO lines through their own loggers: keep them off the CLI."""
    names = ("ort_format_model.utils", "ort_format_model", "onnxruntime.tools")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


def parse_required_operators(text: str) -> dict[str, dict[str, list[str]]]:
    """ORT's required_operators.config (`domain;opset;Op1,Op2` lines, `#` comments) -> {domain: {opset: [ops]}}."""
    out: dict[str, dict[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(";")
        if len(parts) != 3:
            raise ToolkitError(f"required_operators.config: unexpected line '{line[:80]}'")
        domain, opset, ops = parts
        out.setdefault(domain, {})[opset] = sorted(o for o in ops.split(",") if o)
    return out


def write_ort_form(onnx_path: Path) -> tuple[Path, Path, dict]:
    """`<stem>.ort` and `<stem>.required_operators.config` beside `<stem>.onnx`, by ORT's own converter.

    Fixed optimization style (optimizations applied before saving: what the CPU EP runs; ORT's guidance for NNAPI /
    Core ML is the Runtime style, see the usability verdict). The config lists the operators a minimal ORT build
    needs (`build.sh --minimal_build --include_ops_by_config <file>`). Returns (ort, config, facts)."""
    import os

    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path = Path(onnx_path)
    ort_path = onnx_path.with_suffix(".ort")
    config = onnx_path.with_suffix(".required_operators.config")
    with _ort_tool_quiet():
        convert_onnx_models_to_ort(onnx_path, output_dir=onnx_path.parent,
                                   optimization_styles=[OptimizationStyle.Fixed],
                                   target_platform=ORT_TARGET_PLATFORM)
    if not ort_path.is_file() or not config.is_file():
        raise ToolkitError(f"{ORT_CONVERTER} wrote no {ort_path.name} / {config.name}")
    # the converter names the model it read by absolute (here: temporary) path; keep the file name, so the config is
    # the same bytes wherever the export ran
    text = config.read_text()
    config.write_text(text.replace(str(ort_path.resolve()), ort_path.name).replace(str(ort_path), ort_path.name))
    facts = {
        "tool": ORT_CONVERTER,
        "onnxruntime": ort.__version__,
        "converted_from": onnx_path.name,
        "optimization_style": "Fixed",
        "optimization_level": os.getenv("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", "all"),
        "target_platform": ORT_TARGET_PLATFORM,
        "required_operators_file": config.name,
        "required_operators": parse_required_operators(config.read_text()),
    }
    return ort_path, config, facts


def required_operators_of(ort_path: Path) -> dict[str, dict[str, list[str]]]:
    """The operators an .ort file needs, read from the file itself by ORT's config writer (what verify compares the
    shipped required_operators.config against)."""
    import tempfile

    from onnxruntime.tools.ort_format_model import create_config_from_models

    with tempfile.TemporaryDirectory() as tmp, _ort_tool_quiet():
        out = Path(tmp) / "required_operators.config"
        create_config_from_models([Path(ort_path)], out, False)
        return parse_required_operators(out.read_text())


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _partitioning(info, verdict) -> dict:
    return {
        "verdict": verdict.name,
        "partitions": int(info.num_partitions),
        "supported_nodes": int(info.num_supported_nodes),
        "nodes": int(info.num_nodes),
        "partition_sizes": [len(g) for g in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "nodes_unsupported_due_to_op": int(info.nodes_unsupported_due_to_op),
        "nodes_unsupported_due_to_dynamic_shape": int(info.nodes_unsupported_due_to_dynamic_input),
        "ops_with_unsupported_rank": sorted(info.ops_with_unsupported_rank),
        "caveats_not_checked": info.supported_ops_checker.get_caveats(),
    }


def mobile_usability(onnx_path: Path) -> dict:
    """ORT's mobile usability checker on the .onnx, as structured data: per execution provider (NNAPI, Core ML
    NeuralNetwork, Core ML MLProgram) the verdict YES / MAYBE / NO, the partitions and the ops that block it.

    Same steps as `python -m onnxruntime.tools.check_onnx_model_mobile_usability`: optimize to BASIC, infer shapes,
    estimate the partitions per EP from ORT's own supported-op tables, and when the verdict is not YES and an input is
    dynamic, the verdict if the shapes were fixed (the better of the two is the verdict, as the tool reports)."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    onnx_path = Path(onnx_path)
    log = logging.getLogger("toolkit.ort_usability")
    log.propagate = False
    collect = _Collect()
    log.addHandler(collect)
    try:
        with tempfile.TemporaryDirectory() as tmp, _ort_tool_quiet():
            optimized = Path(tmp) / onnx_path.name
            optimize_model(onnx_path, optimized, use_external_initializers=True)
            wrapper = ModelProtoWithShapeInfo(optimized)
            model = wrapper.model_with_shape_info
            dynamic_inputs, n_dynamic = uc.check_shapes(model.graph, log)
            eps = []
            for name, table in USABILITY_EPS:
                def check(m, fixed, table=table):
                    if table is None:
                        return uc.check_nnapi_partitions(m, fixed)
                    return uc.check_coreml_partitions(m, fixed, table)

                info = check(model, True)
                verdict = info.suitability()
                rec = {"ep": name, **_partitioning(info, verdict)}
                if verdict != uc.PartitioningInfo.TryWithEP.YES and dynamic_inputs:
                    fixed_info = check(model, False)
                    fixed = fixed_info.suitability()
                    rec["if_shapes_fixed"] = _partitioning(fixed_info, fixed)
                    if fixed.value > verdict.value:
                        rec["verdict"] = fixed.name
                eps.append(rec)
            del wrapper
    finally:
        log.removeHandler(collect)
    return {
        "tool": ORT_USABILITY,
        "onnxruntime": ort.__version__,
        "analysed": onnx_path.name,
        "steps": "optimized to BASIC, shapes inferred, partitions estimated from ORT's supported-op tables",
        "dynamic_inputs": [i.name for i in dynamic_inputs],
        "dynamic_shape_values": int(n_dynamic),
        "warnings": collect.lines,
        "execution_providers": eps,
        "meaning": "YES: one partition covering > 75% of nodes; MAYBE: worth measuring against the CPU EP; NO: the "
                   "partitions' device copies will most likely cost more than the EP saves (use the CPU EP)",
    }


def usability_line(ep: dict) -> str:
    """One line per EP for the CLI: `NNAPI: NO (6 partitions, 134/139 nodes; unsupported: Reciprocal)`."""
    ops = [o.split(":", 1)[-1] for o in ep["unsupported_ops"]]
    ops += [f"{o} (rank)" for o in ep["ops_with_unsupported_rank"]]
    return (f"{ep['ep']}: {ep['verdict']} ({ep['partitions']} partition{'s' if ep['partitions'] != 1 else ''}, "
            f"{ep['supported_nodes']}/{ep['nodes']} nodes" + (f"; unsupported: {', '.join(ops)}" if ops else "") + ")")
