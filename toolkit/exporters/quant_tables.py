"""int8 tables with per-row scales, written as plain ops every stock runtime runs (recipe key `embedding = "int8"`).

The item table (12,101 x 64 fp32 = 3.1 MB of SCN's 3.3 MB) and a precomputed candidate-tower table are what makes an
artifact large; Linear-only quantization leaves them fp32. Each large float table gathered by `aten::embedding` becomes
an int8 table + one fp32 scale per row:  embedding(q8, ids).to(float) * embedding(scale, ids)  (symmetric, scale =
max|row| / 127, round to nearest). No `quantized_decomposed` ops: the ExecuTorch 1.4.1 runtime registers no
embedding_byte / embedding_4bit kernels, so a graph using them would not load; these are aten.embedding, a cast and a
multiply, which the portable kernels (ExecuTorch), Gather/Cast/Mul (ONNX) run anywhere.

- ExecuTorch: `rewrite_graph_module` on the captured graph (torch.export(...).module()) before lowering.
- ONNX: `rewrite_onnx_model` on the exported model: Gather on a float initializer -> Gather int8, Cast, Gather scale,
  Mul.
Tables smaller than MIN_ROWS x MIN_COLS (the 0/1 padding mask, RoPE rows) stay as they are.
"""

from __future__ import annotations

import numpy as np

from toolkit.errors import ToolkitError

EMBEDDING_MODES = ("none", "int8")
MIN_ROWS = 128  # item tables of real catalogues are far larger; positions and masks far smaller
MIN_COLS = 8


def check_mode(mode: str, recipe: str) -> str:
    if mode not in EMBEDDING_MODES:
        raise ToolkitError(f"recipe {recipe}: unknown embedding '{mode}' (valid: {', '.join(EMBEDDING_MODES)})")
    return mode


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] float -> (int8 [N, D], float32 scale [N, 1]); w ~= q * scale, |error| <= scale / 2 per entry.
    An all-zero row (the padding row) gets scale 0, so it stays exactly zero."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def _large(shape) -> bool:
    return len(shape) == 2 and shape[0] >= MIN_ROWS and shape[1] >= MIN_COLS


def rewrite_graph_module(gm) -> list[dict]:
    """Replace every aten.embedding of a large float constant in a torch.fx GraphModule (in place); returns what was
    quantized: [{"table", "shape", "fp32_bytes", "int8_bytes"}]."""
    import torch

    done: dict[str, tuple] = {}
    report = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.embedding.default:
            continue
        w_node, ids = node.args[0], node.args[1]
        if getattr(w_node, "op", None) != "get_attr":
            continue
        w = _get_attr(gm, w_node.target)
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or not _large(tuple(w.shape)):
            continue
        key = w_node.target
        if key not in done:
            q, s = quantize_rows(w.detach().float().cpu().numpy())
            base = key.replace(".", "_")
            qn, sn = f"{base}_int8", f"{base}_row_scale"
            gm.register_buffer(qn, torch.from_numpy(q))
            gm.register_buffer(sn, torch.from_numpy(s).to(w.dtype))
            done[key] = (qn, sn, w.dtype)
            report.append({"table": key, "shape": list(w.shape), "dtype": str(w.dtype).replace("torch.", ""),
                           "fp32_bytes": int(w.numel() * w.element_size()), "int8_bytes": int(q.nbytes + s.nbytes)})
        qn, sn, dt = done[key]
        with graph.inserting_before(node):
            qa = graph.get_attr(qn)
            sa = graph.get_attr(sn)
            g = graph.call_function(torch.ops.aten.embedding.default, (qa, ids))
            f = graph.call_function(torch.ops.aten._to_copy.default, (g,), {"dtype": dt})
            sc = graph.call_function(torch.ops.aten.embedding.default, (sa, ids))
            out = graph.call_function(torch.ops.aten.mul.Tensor, (f, sc))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    for key in done:  # the float tables are no longer read: drop them so they are not serialised
        if not any(n.op == "get_attr" and n.target == key for n in graph.nodes):
            _del_attr(gm, key)
    return report


def _get_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _del_attr(gm, target: str) -> None:
    *path, last = target.split(".")
    obj = gm
    for part in path:
        obj = getattr(obj, part)
    if last in getattr(obj, "_buffers", {}):
        del obj._buffers[last]
    elif last in getattr(obj, "_parameters", {}):
        del obj._parameters[last]


def rewrite_onnx_model(model) -> list[dict]:
    """Replace every Gather whose data is a large float initializer in an onnx ModelProto (in place)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done: dict[str, tuple] = {}
    report = []
    new_nodes = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            new_nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        init = inits[node.input[0]]
        if axis != 0 or init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16) or not _large(tuple(init.dims)):
            new_nodes.append(node)
            continue
        name = init.name
        if name not in done:
            w = numpy_helper.to_array(init)
            q, s = quantize_rows(w.astype(np.float32))
            qn, sn = f"{name}_int8", f"{name}_row_scale"
            model.graph.initializer.append(numpy_helper.from_array(q, qn))
            model.graph.initializer.append(numpy_helper.from_array(s.astype(w.dtype), sn))
            done[name] = (qn, sn, init.data_type)
            report.append({"table": name, "shape": list(init.dims), "dtype": str(w.dtype),
                           "fp32_bytes": int(w.nbytes), "int8_bytes": int(q.nbytes + s.nbytes)})
        qn, sn, dt = done[name]
        out = node.output[0]
        tag = f"{node.name or out}_q8"
        new_nodes += [
            helper.make_node("Gather", [qn, node.input[1]], [f"{tag}_g"], name=f"{tag}_gather", axis=0),
            helper.make_node("Cast", [f"{tag}_g"], [f"{tag}_f"], name=f"{tag}_cast", to=dt),
            helper.make_node("Gather", [sn, node.input[1]], [f"{tag}_s"], name=f"{tag}_scale", axis=0),
            helper.make_node("Mul", [f"{tag}_f", f"{tag}_s"], [out], name=f"{tag}_mul"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name in used or i.name not in done]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return report
