"""State check: the buffers an ExportedProgram mutates vs what each artifact actually keeps (docs/export.md §3).

Two halves:
- contract vs graph: export `BufferedState(entry)` and read `graph_signature.buffers_to_mutate` (after
  `run_decompositions`: on torch 2.13 the pre-dispatch signature lists no mutation). Every mutated buffer must be a
  declared state; a hidden in-place update inside the functional module would be dropped by ONNX and left
  uninitialised by ExecuTorch.
- graph vs artifact: ONNX must carry `state_in.*`/`state_out.*`; ExecuTorch must serialise an *initialised* mutable
  buffer per state; Core ML must declare the state and update it with `write_state`.
A mismatch raises CheckFailed with a fix hint (a failed export).
"""

from __future__ import annotations

import torch

from toolkit.errors import CheckFailed
from toolkit.exporters.common import STATE_IN, STATE_OUT
from toolkit.models.contract import BufferedState, EntryPoint, buffer_name


def mutated_buffers(entry: EntryPoint) -> list[str]:
    """Fully qualified names of the buffers `BufferedState(entry)` updates in place, per torch.export."""
    wrap = BufferedState(entry).eval()
    with torch.no_grad():
        ep = torch.export.export(wrap, entry.example_inputs(), strict=False).run_decompositions({})
    return sorted(set(ep.graph_signature.buffers_to_mutate.values()))


def contract_check(entry: EntryPoint, mutated: list[str] | None = None) -> dict:
    """Declared states vs mutated buffers of the exported graph (shared by every target)."""
    mutated = mutated_buffers(entry) if mutated is None else mutated
    declared = sorted(buffer_name(s.name) for s in entry.states)
    problems, hints = [], []
    for fqn in sorted(set(mutated) - set(declared)):
        problems.append(f"buffer '{fqn}' is updated in place but is not a declared state")
        hints.append(f"declare '{fqn}' as a StateSpec in contract() and thread it through "
                     "forward(*inputs, *states) -> (*outputs, *new_states)")
    for fqn in sorted(set(declared) - set(mutated)):
        problems.append(f"declared state buffer '{fqn}' is never updated by the exported graph")
        hints.append("return the new value of every declared state from the functional module")
    return {"declared": declared, "mutated_in_exported_program": sorted(mutated), "problems": problems,
            "hints": hints}


def _finish(base: dict, runtime: str, kept: list[str], problems: list[str], hints: list[str]) -> dict:
    all_problems = base["problems"] + problems
    return {"pass": not all_problems, "runtime": runtime, "declared": base["declared"],
            "mutated_in_exported_program": base["mutated_in_exported_program"], "kept_by_artifact": sorted(kept),
            "problems": all_problems, "hints": base["hints"] + hints}


def onnx_state_check(entry: EntryPoint, base: dict, model) -> dict:
    """ONNX keeps state as I/O: each state needs `state_in.<name>` and `state_out.<name>` of the declared shape."""
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    kept, problems, hints = [], [], []
    for s in entry.states:
        want = list(s.shape)
        i_name, o_name = STATE_IN + s.name, STATE_OUT + s.name
        ok = True
        for name, table, kind in ((i_name, ins, "input"), (o_name, outs, "output")):
            if name not in table:
                problems.append(f"ONNX model has no state {kind} '{name}'")
                ok = False
            elif table[name] != want:
                problems.append(f"ONNX state {kind} '{name}' has shape {table[name]}, declared {want}")
                ok = False
        if ok:
            kept.append(buffer_name(s.name))
    if problems:
        hints.append("export the functional module with states as state_in.*/state_out.* I/O: "
                     "torch.onnx.export(dynamo=True) silently drops in-place buffer updates")
    return _finish(base, "onnxruntime", kept, problems, hints)


def executorch_state_check(entry: EntryPoint, base: dict, pte: bytes, init_patterns: list[str]) -> dict:
    """ExecuTorch keeps state in memory-planned mutable buffers; each must carry its initial value in the .pte.

    Read back from the serialised bytes: every declared state needs a planned tensor of its shape whose mutable-data
    segment entry exists and holds exactly the declared initial bytes. (The buffers are matched by shape and content,
    not by name: naming them with emit_mutable_buffer_names=True corrupts the index of a state whose initial bytes
    equal a constant's, e.g. zeros, on executorch 1.4.1 -> "offset index out of range" at load.)
    """
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte_file = deserialize_pte_binary(pte)
    mutable = pte_file.mutable_data or []
    candidates = []  # (sizes, bytes) of planned tensors with initial data
    bad_index = 0
    for v in pte_file.program.execution_plan[0].values:
        t = v.val
        if getattr(t, "allocation_info", None) is None or not getattr(t, "data_buffer_idx", 0):
            continue
        if t.data_buffer_idx >= len(mutable):
            bad_index += 1
            continue
        candidates.append((list(t.sizes), bytes(mutable[t.data_buffer_idx].storage)))
    kept, problems, hints = [], [], []
    for s in entry.states:
        fqn = buffer_name(s.name)
        want = s.initial.detach().contiguous().cpu().numpy().tobytes()
        same_shape = [c for c in candidates if c[0] == list(s.shape)]
        if any(c[1] == want for c in same_shape):
            kept.append(fqn)
        elif same_shape:
            problems.append(f"mutable buffer '{fqn}' is serialised with data that differs from its initial value")
            hints.append("serialise the learned initial state: restore the buffers after any calibration run")
        else:
            problems.append(f"state '{fqn}' is not serialised with its initial value (an uninitialised mutable "
                            "buffer starts from garbage on device)")
            hints.append(f"InitializedMutableBufferPass patterns {init_patterns} must match the buffer's "
                         f"lower-cased placeholder name (e.g. 'b_{fqn.lower()}')")
    if bad_index:
        problems.append(f"{bad_index} mutable tensor(s) point past the mutable-data segment (the program will not "
                        "load)")
        hints.append("do not set emit_mutable_buffer_names=True (executorch 1.4.1 shares indices with constants)")
    return _finish(base, "executorch", kept, problems, hints)


def coreml_state_check(entry: EntryPoint, base: dict, spec) -> dict:
    """Core ML keeps state as ct.StateType; each declared state needs a state input and a write_state op on it."""
    declared_states = {s.name for s in spec.description.state}
    written: set[str] = set()
    for fn in spec.mlProgram.functions.values():
        block = fn.block_specializations[fn.opset]
        for op in block.operations:
            if op.type == "write_state":
                written.update(a.name for a in op.inputs["input"].arguments)
    kept, problems, hints = [], [], []
    for s in entry.states:
        fqn = buffer_name(s.name)
        if fqn not in declared_states:
            problems.append(f"Core ML model declares no state '{fqn}'")
            hints.append(f"pass ct.StateType(name='{fqn}') (named like the buffer) to ct.convert")
        elif fqn not in written:
            problems.append(f"Core ML model never writes state '{fqn}' (no write_state op)")
            hints.append("convert from torch.export(...).run_decompositions({}) so the in-place update survives")
        else:
            kept.append(fqn)
    return _finish(base, "coreml", kept, problems, hints)


def raise_if_failed(check: dict, artifact: str) -> None:
    if not check["pass"]:
        hint = check["hints"][0] if check["hints"] else ""
        raise CheckFailed(f"state check failed for {artifact}: {check['problems'][0]}"
                          + (f" (fix: {hint})" if hint else ""))
