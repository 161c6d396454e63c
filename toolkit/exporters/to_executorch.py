"""ExecuTorch exporter: BufferedState -> torch.export -> [PT2E int8] -> XNNPACK lowering -> .pte (+ .bpte).

Traps handled here (docs/export.md §2): export under no_grad; state buffers get their initial values serialised with
InitializedMutableBufferPass given the exact placeholder names of the state buffers; the updated state is also
returned as `state_out.*` outputs so parity can watch it; delegation coverage is measured on the lowered graph.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from toolkit.errors import CheckFailed, ToolkitError
from toolkit.exporters.common import STATE_OUT, Exported, cast_entry, tensor_record
from toolkit.exporters.recipes import Recipe
from toolkit.exporters.statecheck import executorch_state_check
from toolkit.models.contract import BufferedState, EntryPoint, buffer_name

# matmul-family ops: TTT's runtime-operand matmuls show up as bmm/mm after decomposition
COMPUTE_OPS = ("aten_bmm", "aten_mm", "aten_matmul", "aten_linear", "aten_addmm", "aten_baddbmm",
               "aten_convolution", "aten_einsum")
# bookkeeping nodes that never carry compute
_NON_COMPUTE = ("getitem",)


def _quiet() -> None:
    if os.environ.get("TOOLKIT_VERBOSE") == "1":  # --verbose: show them; otherwise the CLI logs what gets through
        return
    warnings.filterwarnings("ignore", message=".*Mutation on a buffer.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"executorch\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("executorch").setLevel(logging.ERROR)


def _quantize_int8(wrap: torch.nn.Module, entry: EntryPoint, example: tuple, calib: list[tuple]) -> torch.nn.Module:
    """PT2E dynamic per-channel int8 for Linear weights (XNNPACKQuantizer), then restore the learned state values.

    Calibration runs the stateful module, which moves the buffers: without the restore, the serialised initial
    state would be the post-calibration one (what executorch.export's int8 recipe does on 1.4.1).
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    captured = torch.export.export(wrap, example, strict=False).module()
    prepared = prepare_pt2e(captured, quantizer)
    for inputs in calib:
        prepared(*inputs)
    converted = convert_pt2e(prepared)
    initial = {buffer_name(s.name): s.initial for s in entry.states}
    for name, buf in converted.named_buffers():
        key = name.split(".")[-1]
        if key in initial:
            buf.copy_(initial[key].to(buf.dtype))
    return converted


def delegation_report(graph_module) -> dict:
    """Partitions, delegated vs non-delegated op counts, and each op that falls back to portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op = {}
    for op, br in sorted(info.delegation_by_operator.items()):
        by_op[op] = {"delegated": int(br.delegated), "non_delegated": int(br.non_delegated)}
    fallback = {op: c["non_delegated"] for op, c in by_op.items() if c["non_delegated"] and op not in _NON_COMPUTE}
    compute_fallback = {op: n for op, n in fallback.items() if op.startswith(COMPUTE_OPS)}
    compute_total = sum(c["delegated"] + c["non_delegated"] for op, c in by_op.items() if op.startswith(COMPUTE_OPS))
    compute_delegated = sum(c["delegated"] for op, c in by_op.items() if op.startswith(COMPUTE_OPS))
    return {
        "partitions": int(info.num_delegated_subgraphs),
        "delegated_nodes": int(info.num_delegated_nodes),
        "non_delegated_nodes": int(info.num_non_delegated_nodes),
        "compute_ops_delegated": compute_delegated,
        "compute_ops_total": compute_total,
        "fallback_ops": fallback,
        "compute_fallback_ops": compute_fallback,
        "by_operator": by_op,
    }


def export_executorch(entry: EntryPoint, recipe: Recipe, out_dir: Path, stem: str, base_check: dict,
                      calib: list[tuple], require_delegated: bool = False,
                      init_patterns: list[str] | None = None) -> Exported:
    """Write `<stem>.pte`; returns the record fields, delegation coverage and the state check.

    `init_patterns` overrides the InitializedMutableBufferPass patterns (tests use it to drop a state on purpose).
    """
    _quiet()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.configs import (
        get_xnnpack_edge_compile_config,
        get_xnnpack_executorch_backend_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass

    if recipe.opt("backend", "xnnpack") != "xnnpack":
        raise ToolkitError(f"recipe {recipe.name}: only the xnnpack backend is wired (got '{recipe.opt('backend')}')")
    ent = cast_entry(entry, recipe.opt("compute_dtype", "fp32"))
    wrap = BufferedState(ent, expose_states=True).eval()
    example = ent.example_inputs()
    quant = recipe.opt("quantize", "none")
    from toolkit.exporters.quant_tables import check_mode, rewrite_graph_module

    emb = check_mode(recipe.opt("embedding", "none"), recipe.name)
    tables = None
    with torch.no_grad():
        if emb == "int8":  # int8 tables + per-row scales as aten.embedding, a cast and a mul (quant_tables.py)
            wrap = torch.export.export(wrap, example, strict=False).module()
            tables = rewrite_graph_module(wrap)
        if quant == "int8-dynamic-per-channel":
            wrap = _quantize_int8(wrap, ent, example, calib or [example])
        elif quant != "none":
            raise ToolkitError(f"recipe {recipe.name}: unknown quantize '{quant}' "
                               "(valid: none, int8-dynamic-per-channel)")
        ep = torch.export.export(wrap, example, strict=False)
        part_kw = {}
        if recipe.opt("force_non_static_weights_for_f32_linear", False):
            part_kw["force_non_static_weights_for_f32_linear"] = True
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner(**part_kw)],
                                           compile_config=get_xnnpack_edge_compile_config())
    lowered = edge.exported_program()
    delegation = delegation_report(lowered.graph_module)
    if require_delegated and delegation["compute_fallback_ops"]:
        ops = ", ".join(f"{op} x{n}" for op, n in delegation["compute_fallback_ops"].items())
        raise CheckFailed(f"{stem}: matmul-family ops fall back to portable kernels ({ops}); "
                          "try force_non_static_weights_for_f32_linear = true in the recipe or bmm-shaped matmuls")
    state_fqns = {buffer_name(s.name) for s in ent.states}
    if init_patterns is None:
        # the exact lower-cased placeholder names of the state buffers, read from the lowered graph
        init_patterns = sorted(ph for ph, fqn in lowered.graph_signature.inputs_to_buffers.items() if fqn in state_fqns)
    # emit_mutable_buffer_names stays False: see statecheck.executorch_state_check for the index bug it triggers
    passes = [InitializedMutableBufferPass(init_patterns)] if init_patterns else []
    config = get_xnnpack_executorch_backend_config(passes)
    et = edge.to_executorch(config)
    program = et.executorch_program
    pte = et.buffer
    check = executorch_state_check(ent, base_check, pte, init_patterns)
    path = out_dir / f"{stem}.pte"
    path.write_bytes(pte)
    plan = program.execution_plan[0]
    sizes = [int(x) for x in plan.non_const_buffer_sizes]
    record = {
        "inputs": [tensor_record(s.name, s.shape, s.dtype, s.high) for s in ent.inputs],
        "method": "forward",
        "planned_activation_bytes": int(sum(sizes)),
        "non_const_buffer_sizes": sizes,
        "delegation": delegation,
        "state_buffers": {s.name: buffer_name(s.name) for s in ent.states},
        "init_buffer_patterns": init_patterns,
        "state_outputs": [STATE_OUT + s.name for s in ent.states],
    }
    if tables is not None:
        record["embedding_quantization"] = emb
        record["quantized_tables"] = tables
    return Exported(model_file=path, record=record, state_check=check, reference_entry=ent, handle=et)


def write_bundled_program(program_manager, steps: list[dict], path: Path) -> None:
    """`.bpte`: the program + one test case per trajectory step (inputs, expected visible outputs + new states).

    The cases form a trajectory: run them in order on one freshly loaded method.
    """
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    cases = [MethodTestCase(inputs=[torch.from_numpy(x) for x in s["inputs"]],
                            expected_outputs=[torch.from_numpy(y) for y in s["outputs"] + s["states"]])
             for s in steps]
    bundled = BundledProgram(program_manager, [MethodTestSuite("forward", cases)])
    path.write_bytes(serialize_from_bundled_program_to_flatbuffer(bundled))


def check_bundled_program(path: Path, n_cases: int, atol: float, rtol: float) -> dict:
    """Run every bundled case in order with ExecuTorch's own verifier; {'pass', 'cases', 'failed_case'}."""
    import torch  # noqa: F401 - the bindings need libtorch loaded
    from executorch.extension.pybindings import _portable_lib  # not the wrapper: it imports all of exir

    from toolkit.exporters.runners import BPTE_IDENTIFIER, check_program_file, probe_load

    check_program_file(path, BPTE_IDENTIFIER, "ExecuTorch bundled program")
    data = path.read_bytes()
    probe_load(lambda: _portable_lib._load_bundled_program_from_buffer(data), f"bundled program {path.name}")
    bundle = _portable_lib._load_bundled_program_from_buffer(data)
    for i in range(n_cases):
        try:
            bundle.verify_result_with_bundled_expected_output("forward", i, rtol, atol)
        except RuntimeError as e:
            return {"pass": False, "cases": n_cases, "failed_case": i, "error": str(e).splitlines()[0],
                    "atol": atol, "rtol": rtol}
    return {"pass": True, "cases": n_cases, "atol": atol, "rtol": rtol}
