"""Export layer: entry points (contract.py) -> ExecuTorch / ONNX / Core ML artifacts + manifest.json, checked.

Public API:
- export_artifacts(entries, model_name, targets, out_dir, dtype, parity_steps, model_info, progress,
  require_delegated) -> manifest dict (out_dir written atomically)
- open_runner(artifact_dir, record, threads) -> Runner (reset / __call__ / state) in the artifact's real runtime
- verify_dir(artifact_dir) -> report dict
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports (torch.onnx, executorch) stay lazy for `toolkit --help`
    from toolkit.exporters.pipeline import export_artifacts
    from toolkit.exporters.runners import Runner, open_runner
    from toolkit.exporters.verify import read_manifest, verify_dir

__all__ = ["export_artifacts", "open_runner", "Runner", "verify_dir", "read_manifest"]


def __getattr__(name: str):
    if name == "export_artifacts":
        from toolkit.exporters.pipeline import export_artifacts

        return export_artifacts
    if name in ("open_runner", "Runner"):
        from toolkit.exporters import runners

        return getattr(runners, name)
    if name in ("verify_dir", "read_manifest"):
        from toolkit.exporters import verify

        return getattr(verify, name)
    raise AttributeError(f"module 'toolkit.exporters' has no attribute '{name}'")
