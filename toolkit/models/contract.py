"""The export contract: every exportable entry point declares its inputs, outputs and state once.

Runtimes derive everything from this declaration (docs/export.md §1-§2):
- `module` is the *functional* form: forward(*inputs, *states) -> (*outputs, *new_states). No hidden mutation.
- ONNX exports it as is: states become `state_in.<name>` inputs and `state_out.<name>` outputs.
- ExecuTorch and Core ML wrap it so each state is a mutable buffer updated in place (see `BufferedState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    # For int64 id inputs: valid values are 0..high (inclusive); used to build example inputs and to range-check.
    # For a float input: a count carried as a float (the gate's lag), example values drawn from 1..high.
    high: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype).replace("torch.", "")}


@dataclass
class StateSpec:
    name: str
    initial: torch.Tensor  # the learned initial value, shipped with the artifact

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.initial.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.initial.dtype

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype).replace("torch.", "")}


@dataclass
class EntryPoint:
    """One exported method. `module(*inputs, *states) -> (*outputs, *new_states)`."""

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[str]
    states: list[StateSpec] = field(default_factory=list)
    description: str = ""

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Deterministic valid inputs: ids in 1..high, floats ~N(0, 1) (corrections, noise), float counts in
        1..high."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for spec in self.inputs:
            if spec.dtype in (torch.int64, torch.int32):
                hi = spec.high if spec.high is not None else 1
                out.append(torch.randint(1, max(hi, 1) + 1, spec.shape, generator=g, dtype=spec.dtype))
            elif spec.high is not None:
                out.append(torch.randint(1, max(spec.high, 1) + 1, spec.shape, generator=g).to(spec.dtype))
            else:
                out.append(torch.randn(spec.shape, generator=g, dtype=spec.dtype))
        return tuple(out)

    def initial_states(self) -> tuple[torch.Tensor, ...]:
        return tuple(s.initial.detach().clone() for s in self.states)


class BufferedState(nn.Module):
    """Stateful wrapper for ExecuTorch / Core ML: states live in buffers named `state_<name>`, updated in place.

    The update is written `buf.add_(new - buf)` rather than `buf.copy_(new)`: XNNPACK lowering can crash on
    read-then-copy buffers (executorch #21855; docs/export.md §2).
    """

    def __init__(self, entry: EntryPoint, expose_states: bool = False):
        super().__init__()
        self.inner = entry.module
        self.state_names = [s.name for s in entry.states]
        # expose_states: also return a copy of each updated state after the visible outputs, so a runtime that
        # keeps state internally (ExecuTorch, Core ML) can still be checked step by step (`state_out.<name>`).
        self.expose_states = expose_states
        for s in entry.states:
            self.register_buffer(buffer_name(s.name), s.initial.detach().clone())

    def forward(self, *inputs: torch.Tensor):
        bufs = [getattr(self, buffer_name(n)) for n in self.state_names]
        outs = self.inner(*inputs, *bufs)
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        n = len(bufs)
        if n == 0:
            return tuple(outs) if len(outs) > 1 else outs[0]
        for buf, new in zip(bufs, outs[-n:]):
            buf.add_(new - buf)
        visible = tuple(outs[:-n])
        if self.expose_states:
            return visible + tuple(new.clone() for new in outs[-n:])
        return visible if len(visible) > 1 else visible[0]


def buffer_name(state: str) -> str:
    return "state_" + state.replace(".", "_")
