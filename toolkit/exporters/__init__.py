"""Export layer: entry points (contract.py) -> ExecuTorch / ONNX / Core ML artifacts + manifest.json, checked.

Public API:
- export_artifacts(entries, model_name, targets, out_dir, dtype, parity_steps, model_info, progress,
  require_delegated) -> manifest dict (out_dir written atomically)
- open_runner(artifact_dir, record, threads) -> RuntimeSession (reset / __call__ / state) in the artifact's real runtime
- verify_dir(artifact_dir, expect=None, allow_extra=False) -> report dict
- read_manifest / verified (toolkit.exporters.manifest): the one reader of an artifact dir
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports (torch.onnx, executorch) stay lazy for `toolkit --help`
    from toolkit.exporters.export import export_artifacts
    from toolkit.exporters.manifest import read_manifest, verified
    from toolkit.exporters.runners import RuntimeSession, open_runner
    from toolkit.exporters.verify import verify_dir

__all__ = ["export_artifacts", "open_runner", "RuntimeSession", "verify_dir", "read_manifest", "verified"]


def __getattr__(name: str):
    if name == "export_artifacts":
        from toolkit.exporters.export import export_artifacts

        return export_artifacts
    if name in ("open_runner", "RuntimeSession"):
        from toolkit.exporters import runners

        return getattr(runners, name)
    if name == "verify_dir":
        from toolkit.exporters.verify import verify_dir

        return verify_dir
    if name in ("read_manifest", "verified"):
        from toolkit.exporters import manifest

        return getattr(manifest, name)
    raise AttributeError(f"module 'toolkit.exporters' has no attribute '{name}'")
