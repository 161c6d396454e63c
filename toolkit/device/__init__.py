"""Devices: the emulated ARM64 target (qemu-user + an instruction-count plugin) and Android phones over adb.

Entry points:
    toolkit.device.arm64.setup / status          build / check the emulated target (cache folder)
    toolkit.device.emulated.run_artifacts        run an export on emulated ARM64 -> bench rows (instructions)
    toolkit.device.emulated.bench_onnx           one ONNX artifact, for `toolkit bench --target arm64-a76`
    toolkit.device.adb.run_on_device             run an export on a phone with a user-built runner -> rows (ms)
    toolkit.device.targets.list_targets          host, emulated arm64 (ready or why not), adb devices
    toolkit.device.budgets.apply_budgets         rows against a budgets TOML (same rules as `toolkit bench`)
Modules import lazily: importing `toolkit.device` costs nothing.
"""
