"""The ExecuTorch C++ runner (et_runner.cpp), built against the runtime that ships in the executorch wheel.

An app runs a .pte through ExecuTorch's C++ runtime, not through Python. The executorch wheel carries that runtime
(program loader, portable + optimized kernels, XNNPACK delegate) in `extension/pybindings/_portable_lib*.so` with
its C++ API exported, plus the runtime headers (`executorch/include`). This module turns it into a C++ runner:

  lib/       the wheel's _portable_lib with its libtorch_python.so / libtorch.so NEEDs removed (patchelf: nothing
             the runtime path calls lives there), libtorch_cpu + libc10 and their CPU neighbours, and
             libtoolkit_pystub.so: the Python data symbols the library binds at load (type objects, exception
             objects, None/True/False), generated from its relocation table; nothing calls into them
  bin/et_runner  toolkit/device/et_runner.cpp compiled against the wheel's headers

Two builds:
  aarch64 (`toolkit device setup arm64 --with-executorch`): the executorch and torch manylinux_2_28_aarch64 wheels
      from PyPI (`pip download --no-deps`), libcudart.so.13 / libcupti.so.13 as empty stub libraries carrying the
      version node libtorch_cpu asks for (PyPI's aarch64 torch is the CUDA build; lazy binding: nothing calls them),
      cross-compiled with Debian's g++-aarch64-linux-gnu, run under qemu-aarch64 with the instruction-count plugin.
  host (x86_64, `toolkit bench --runtimes executorch-cpp`): the host's installed executorch + torch (CPU build), in
      place. The x86_64 _portable_lib keeps the runtime core (runtime_abort, vlogf, the PAL, TensorImpl, backend
      registry) in a neighbour it NEEDs, backends/qualcomm/libqnn_executorch_backend.so; linking both resolves them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from toolkit.device.orchestrator import DeviceRunner, ExecResult, Invocation, Transport, tail
from toolkit.device.plan import Measurement
from toolkit.errors import ToolkitError
from toolkit.io import atomic_write_json, cache_dir, read_json, sha256_file

RUNNER_SOURCE = Path(__file__).with_name("et_runner.cpp")
RUNNER_NAME = "et_runner"
PORTABLE_LIB = "extension/pybindings/_portable_lib.cpython-311-{arch}-linux-gnu.so"
DROP_NEEDED = ("libtorch_python.so", "libtorch.so")  # the Python binding side; the runtime path never calls them
CUDA_STUBS = ("libcudart.so.13", "libcupti.so.13")  # aarch64 torch is the CUDA build: empty, right version node
# libtorch_cpu's CPU neighbours in the aarch64 torch wheel (its NEEDs, and theirs)
AARCH64_TORCH_LIBS = ("libtorch_cpu.so", "libc10.so", "libgomp.so.1", "libarm_compute.so", "libarm_compute_graph.so",
                      "libnvpl_blas_core.so.0", "libnvpl_blas_lp64_gomp.so.0", "libnvpl_lapack_core.so.0",
                      "libnvpl_lapack_lp64_gomp.so.0")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
CROSS_CXX = "aarch64-linux-gnu-g++"
CROSS_PACKAGES = ("g++-aarch64-linux-gnu", "patchelf")
PY_SYMBOL = re.compile(r"^_?Py[A-Za-z_]\w*$")


@dataclass
class Lane:
    """One built runner: where its files are and what it was built from."""

    root: Path
    arch: str  # aarch64 | x86_64

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def include(self) -> Path:
        return self.root / "include"

    @property
    def runner(self) -> Path:
        return self.root / "bin" / RUNNER_NAME

    @property
    def stamp(self) -> Path:
        return self.root / "build.json"

    def info(self) -> dict | None:
        try:
            return read_json(self.stamp, "ExecuTorch runner build stamp")
        except ToolkitError:
            return None

    def problem(self, versions: dict[str, str] | None = None) -> str | None:
        """None when the runner is built, current (source unchanged) and from these versions; else why not."""
        info = self.info()
        if info is None or not self.runner.is_file():
            return f"ExecuTorch C++ runner not built in {self.root}"
        if info.get("runner_source_sha256") != sha256_file(RUNNER_SOURCE):
            return "ExecuTorch C++ runner source changed since it was built"
        if versions is not None and info.get("versions") != versions:
            return f"ExecuTorch C++ runner built from {info.get('versions')}, wanted {versions}"
        return None


def _run(cmd: list, what: str, fix: str, timeout: float = 1800, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except FileNotFoundError:
        raise ToolkitError(f"{what}: '{cmd[0]}' not found ({fix})") from None
    except subprocess.TimeoutExpired:
        raise ToolkitError(f"{what}: timed out after {timeout:.0f}s") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower() or "undefined reference" in ln]
        errors = [ln for ln in errors if "ld returned" not in ln] or errors
        raise ToolkitError(f"{what} failed (exit {p.returncode}): {' | '.join((errors or lines)[-2:])} ({fix})")
    return p.stdout


def host_versions() -> dict[str, str]:
    """executorch and torch versions of the host (the aarch64 wheels are taken at the same versions)."""
    out = {}
    for dist in ("executorch", "torch"):
        try:
            out[dist] = metadata.version(dist).split("+")[0]
        except metadata.PackageNotFoundError:
            raise ToolkitError(f"{dist} is not installed on the host (pip install {dist}); the ExecuTorch C++ "
                               f"runner is built from the same version") from None
    return out


def _need_tools(tools: dict[str, str], apt: bool, purpose: str) -> None:
    """Each tool (-> its Debian package) on PATH, installing them with apt-get when root and allowed."""
    missing = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
    if not missing:
        return
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if apt and root and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *missing]):
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if p.returncode != 0:
                tail = " | ".join([ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()][-2:])
                raise ToolkitError(f"{purpose}: `{' '.join(cmd[:3])}` {' '.join(missing)} failed: {tail}")
        still = sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
        if not still:
            return
        missing = still
    why = "--no-apt given" if not apt else ("not root" if not root else "apt-get not found")
    raise ToolkitError(f"{purpose} needs {', '.join(missing)} ({why}): `sudo apt-get install -y {' '.join(missing)}`")


# ------------------------------------------------------------------------------------------------ the stubs


def python_stub_source(lib: Path, readelf: str = "readelf") -> tuple[str, list[str]]:
    """C source defining every Python symbol `lib` binds at load time (relocations other than PLT slots: data
    objects and function addresses taken for tables). Functions abort if ever called; nothing on the runtime's
    path calls them (Python is never initialised in the runner)."""
    out = _run([readelf, "-rW", "--dyn-syms", lib], f"reading the relocations of {lib.name}",
               "binutils must be installed")
    und_types: dict[str, str] = {}
    eager: set[str] = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[6] == "UND" and parts[0].endswith(":"):
            und_types[parts[7].split("@")[0]] = parts[3]
        elif len(parts) >= 5 and parts[2].startswith("R_") and "JUMP_SLOT" not in parts[2]:
            eager.add(parts[4].split("@")[0])
    names = sorted(n for n in eager if PY_SYMBOL.match(n) and n in und_types)
    lines = ["/* generated by toolkit.device.et_cpp: Python symbols the ExecuTorch runtime library binds at load */",
             "#include <stdlib.h>"]
    for n in names:
        if und_types[n] == "FUNC":
            lines.append(f"void {n}(void) {{ abort(); }}")
        else:  # type objects, exception objects, the None/True/False structs: storage only, never read
            lines.append(f"__attribute__((aligned(64))) unsigned char {n}[512];")
    return "\n".join(lines) + "\n", names


def _build_cuda_stubs(lib: Path, cc: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "empty.c"
        src.write_text("/* empty: libtorch_cpu NEEDs this CUDA library; the CPU path never calls it */\n"
                       "int toolkit_cuda_stub;\n")
        for name in CUDA_STUBS:
            vs = Path(tmp) / f"{name}.map"
            vs.write_text(f"{name} {{ global: *; }};\n")  # the version node libtorch_cpu's symbols ask for
            _run([cc, "-shared", "-fPIC", "-o", lib / name, f"-Wl,-soname,{name}", f"-Wl,--version-script={vs}", src],
                 f"building the stub {name}", "the C cross compiler must work")


def _prepare_lib(lane: Lane, portable: Path, readelf: str, cc: str, rpath: str) -> list[str]:
    """Copy the runtime library beside the others, drop its Python-binding NEEDs, build the Python symbol stub."""
    dest = lane.lib / portable.name
    shutil.copy2(portable, dest)
    os.chmod(dest, 0o755)
    needed = _run([readelf, "-d", dest], f"reading {dest.name}", "binutils must be installed")
    drop = [n for n in DROP_NEEDED if f"[{n}]" in needed]
    _run(["patchelf", *[x for n in drop for x in ("--remove-needed", n)], "--set-rpath", rpath, dest],
         f"patchelf {dest.name}", "apt-get install patchelf")
    source, names = python_stub_source(dest, readelf)
    stub_c = lane.root / "build" / "toolkit_pystub.c"
    stub_c.parent.mkdir(parents=True, exist_ok=True)
    stub_c.write_text(source)
    _run([cc, "-shared", "-fPIC", "-O2", "-o", lane.lib / "libtoolkit_pystub.so", "-Wl,-soname,libtoolkit_pystub.so",
          stub_c], "building the Python symbol stub", "the C compiler must work")
    return names


def _compile_runner(lane: Lane, portable: Path, cxx: str, rpath: str, rpath_link: list[Path],
                    extra_libs: tuple[Path, ...] = ()) -> None:
    lane.runner.parent.mkdir(parents=True, exist_ok=True)
    tmp = lane.runner.with_name(f".{RUNNER_NAME}.{os.getpid()}")
    cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wno-unused-parameter", f"-I{lane.include}",
           f"-I{lane.include / 'executorch' / 'runtime' / 'core' / 'portable_type' / 'c10'}",
           "-DC10_USING_CUSTOM_GENERATED_MACROS", "-o", tmp, RUNNER_SOURCE, lane.lib / portable.name,
           *extra_libs, lane.lib / "libtoolkit_pystub.so", f"-Wl,-rpath,{rpath}", "-Wl,--allow-shlib-undefined",
           "-Wl,--no-as-needed", *[f"-Wl,-rpath-link,{d}" for d in rpath_link], "-lpthread"]
    _run(cmd, f"compiling the ExecuTorch C++ runner ({lane.arch})",
         f"{cxx} and the executorch headers must be present")
    os.replace(tmp, lane.runner)


def _write_stamp(lane: Lane, versions: dict, extra: dict) -> None:
    atomic_write_json(lane.stamp, {"arch": lane.arch, "versions": versions,
                                   "runner_source_sha256": sha256_file(RUNNER_SOURCE), **extra})


# ------------------------------------------------------------------------------------------------- aarch64


def aarch64_lane(arm64_root: Path) -> Lane:
    return Lane(Path(arm64_root) / "executorch-cpp", "aarch64")


def _pip_download(spec: str, dest: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--platform",
          WHEEL_PLATFORM, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "-d", dest, spec],
         f"pip download {spec} ({WHEEL_PLATFORM})", f"PyPI must be reachable and have a {WHEEL_PLATFORM} wheel "
         f"of {spec}", timeout=3600)
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if not found:
        raise ToolkitError(f"pip download {spec}: no wheel in {dest}")
    return found[-1]


def build_aarch64(arm64_root: Path, apt: bool = True, keep_wheels: bool = False) -> str:
    """The aarch64 runner and its libraries under <arm64 cache>/executorch-cpp (about 330 MB on disk)."""
    _need_tools({CROSS_CXX: "g++-aarch64-linux-gnu", "aarch64-linux-gnu-readelf": "binutils-aarch64-linux-gnu",
                 "patchelf": "patchelf"}, apt, "the ExecuTorch ARM64 runner")
    versions = host_versions()
    lane = aarch64_lane(arm64_root)
    wheels = Path(arm64_root) / "wheels-executorch"
    wheels.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(arm64_root).free
    if free < 2.5e9:
        raise ToolkitError(f"the ExecuTorch ARM64 runner needs ~2 GB while it builds (torch wheel 430 MB, libraries "
                           f"330 MB); only {free / 1e9:.1f} GB free in {arm64_root}")
    et_whl = _pip_download(f"executorch=={versions['executorch']}", wheels)
    torch_whl = _pip_download(f"torch=={versions['torch']}", wheels)
    tmp = Path(tempfile.mkdtemp(prefix=".executorch-cpp.", dir=arm64_root))
    try:
        stage = Lane(tmp, "aarch64")
        stage.lib.mkdir(parents=True)
        portable = PORTABLE_LIB.format(arch="aarch64")
        with zipfile.ZipFile(et_whl) as z:
            names = z.namelist()
            if f"executorch/{portable}" not in names:
                raise ToolkitError(f"{et_whl.name} has no executorch/{portable} (the runtime library)")
            headers = [n for n in names if n.startswith("executorch/include/") and not n.endswith("/")]
            if not headers:
                raise ToolkitError(f"{et_whl.name} ships no runtime headers (executorch/include)")
            for n in headers:
                target = stage.include / n[len("executorch/include/"):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(n))
            src = tmp / "build" / Path(portable).name
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(z.read(f"executorch/{portable}"))
        with zipfile.ZipFile(torch_whl) as z:
            have = set(z.namelist())
            for n in AARCH64_TORCH_LIBS:
                if f"torch/lib/{n}" not in have:
                    raise ToolkitError(f"{torch_whl.name} has no torch/lib/{n} (libtorch_cpu's neighbours changed?)")
                with z.open(f"torch/lib/{n}") as fin, open(stage.lib / n, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
        _build_cuda_stubs(stage.lib, "aarch64-linux-gnu-gcc")
        py = _prepare_lib(stage, src, "aarch64-linux-gnu-readelf", "aarch64-linux-gnu-gcc", "$ORIGIN")
        _compile_runner(stage, src, CROSS_CXX, "$ORIGIN/../lib", [stage.lib])
        _write_stamp(stage, versions, {"wheels": [et_whl.name, torch_whl.name], "python_symbols": py,
                                       "cuda_stubs": list(CUDA_STUBS), "dropped_needed": list(DROP_NEEDED)})
        shutil.rmtree(tmp / "build" / Path(portable).name, ignore_errors=True)
        if lane.root.exists():
            shutil.rmtree(lane.root)
        os.replace(tmp, lane.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not keep_wheels:
        shutil.rmtree(wheels, ignore_errors=True)
    return f"executorch {versions['executorch']} + torch {versions['torch']} (aarch64 CPU libraries), {len(py)} Python symbols stubbed"


# ---------------------------------------------------------------------------------------------------- host


def host_lane(cache: str | Path | None = None) -> Lane:
    return Lane(Path(cache) if cache else cache_dir("executorch-cpp"), platform.machine())


def _site_paths() -> tuple[Path, Path]:
    try:
        et_dir = Path(metadata.distribution("executorch").locate_file("executorch"))
        torch_dir = Path(metadata.distribution("torch").locate_file("torch"))
    except metadata.PackageNotFoundError as e:
        raise ToolkitError(f"{e.name} is not installed on the host: the host ExecuTorch C++ runner links its "
                           f"runtime library") from None
    return et_dir, torch_dir


def build_host(cache: str | Path | None = None) -> Lane:
    """Build (or reuse) the host runner against the installed executorch + torch; returns the lane."""
    lane = host_lane(cache)
    versions = host_versions()
    if lane.problem(versions) is None:
        return lane
    arch = platform.machine()
    _need_tools({"g++": "g++", "patchelf": "patchelf", "readelf": "binutils"}, False, "the host ExecuTorch C++ runner")
    et_dir, torch_dir = _site_paths()
    portable = et_dir / PORTABLE_LIB.format(arch=arch)
    if not portable.is_file():
        raise ToolkitError(f"the installed executorch has no {portable.name} (the runtime library) in {portable.parent}")
    include = et_dir / "include"
    if not (include / "executorch" / "runtime" / "executor" / "program.h").is_file():
        raise ToolkitError(f"the installed executorch ships no runtime headers ({include})")
    # The x86_64 wheel keeps the runtime core in a neighbour library (see the module docstring): link it too.
    core_dirs = [torch_dir / "lib"]
    core_libs: list[Path] = []
    needed = _run(["readelf", "-d", portable], f"reading {portable.name}", "binutils must be installed")
    for m in re.findall(r"\[(lib[^\]]+\.so[^\]]*)\]", needed):
        if m in DROP_NEEDED or (torch_dir / "lib" / m).is_file() or m.startswith(("libc.", "libm.", "libdl.",
                                                                                  "libpthread.", "libstdc++",
                                                                                  "libgcc_s", "ld-linux")):
            continue
        hits = sorted(et_dir.rglob(m))
        if not hits:
            raise ToolkitError(f"{portable.name} needs {m}, which the installed executorch does not ship")
        core_dirs.append(hits[0].parent)
        core_libs.append(hits[0])
    lane.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build.", dir=lane.root))
    try:
        stage = Lane(tmp, arch)
        stage.lib.mkdir(parents=True)
        stage.include.symlink_to(include, target_is_directory=True)
        rpath = ":".join(str(d) for d in core_dirs)
        py = _prepare_lib(stage, portable, "readelf", "gcc", rpath)
        final_lib = lane.lib
        _compile_runner(stage, portable, "g++", f"{final_lib}:{rpath}", [stage.lib, *core_dirs], tuple(core_libs))
        _write_stamp(stage, versions, {"python_symbols": py, "core_libraries": [str(d) for d in core_dirs],
                                       "dropped_needed": list(DROP_NEEDED)})
        for sub in ("lib", "bin", "build", "include"):
            if (lane.root / sub).is_symlink() or (lane.root / sub).is_file():
                (lane.root / sub).unlink()
            elif (lane.root / sub).exists():
                shutil.rmtree(lane.root / sub)
            os.replace(tmp / sub, lane.root / sub)
        os.replace(tmp / "build.json", lane.stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lane


def runner_results(path: Path) -> dict:
    """The runner's results file (format written by et_runner.cpp)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ToolkitError(f"the ExecuTorch C++ runner wrote no readable results ({path.name}: {e})") from None


# ------------------------------------------------------------------------------ the runner in the device loop


class CppRunner(DeviceRunner):
    """et_runner in the device loop (toolkit.device.orchestrator.run_cases): one process per artifact, inputs as raw
    files, outputs as .npy. Under qemu the plugin's counts are read; on the host the runner's wall times."""

    name = "toolkit et_runner (ExecuTorch C++)"
    runtimes = ("executorch",)

    def __init__(self, threads: int = 1, markers: bool = True, history: int | None = None):
        self.threads, self.markers, self.history = threads, markers, history
        self.binary = None

    def stage(self, cases, stage: Path, warmup: int, runs: int, parity_steps: int):
        import numpy as np

        invs = []
        for c in cases:
            d = stage / f"c{c.index}"
            (d / "out").mkdir(parents=True)
            (d / "out" / ".keep").write_text("")
            shutil.copy2(c.path, d / c.path.name)
            steps = []
            for s in range(max(1, c.n_parity_steps(parity_steps))):
                files = []
                for k, value in enumerate(c.step_feeds(s, {}).values()):
                    (d / f"step{s}_in{k}.bin").write_bytes(np.ascontiguousarray(value).tobytes())
                    files.append(f"c{c.index}/step{s}_in{k}.bin")
                steps += ["--step", ",".join(files)]
            argv = [RUNNER_NAME, "--model", f"c{c.index}/{c.path.name}", "--method", c.artifact.get("method", "forward"),
                    "--id", str(c.index), "--threads", str(self.threads), "--out", f"c{c.index}/out",
                    "--results", f"results_c{c.index}.json", "--warmup", str(warmup), "--runs", str(runs), *steps]
            if self.history is not None:
                argv += ["--history", str(self.history)]
            if self.markers:
                argv.append("--markers")
            invs.append(Invocation(argv, [c.index], [f"results_c{c.index}.json", f"c{c.index}/out"], label=c.key))
        return invs

    def parse(self, inv, res, stage: Path, cases):
        import numpy as np

        (i,) = inv.cases
        case = {c.index: c for c in cases}[i]
        path = stage / inv.pulls[0]
        if not path.is_file():
            raise ToolkitError(f"et_runner exited {res.rc} without results: {tail(res.output)}")
        data = runner_results(path)
        r = data["cases"][0]
        m = Measurement(error=r.get("error"))
        names = case.output_names()
        for step in r.get("outputs", []):
            if len(step) != len(names):
                m.error = m.error or (f"the program returned {len(step)} outputs, the manifest lists {len(names)} "
                                      f"({', '.join(names)})")
                break
            m.outputs.append({n: np.load(stage / step[str(k)]) for k, n in enumerate(names)})
        m.extra["runner"] = {"name": self.name, "threadpool_threads": data.get("threadpool_threads"),
                             "load_program_ms": r.get("load_program_ms"), "load_method_ms": r.get("load_method_ms"),
                             "history": r.get("history")}
        icount = res.extra.get("icount")
        if icount is not None:
            oh = icount.regions.get(int(data.get("overhead_region", -1)), [])
            overhead = oh[-1] if oh else None
            counts = [icount.regions.get(rid, [None])[-1] for rid in r.get("regions", [])]
            if m.error is None and (not counts or any(c is None for c in counts)):
                m.error = "instruction counts missing for some calls (plugin not loaded?)"
            m.instructions = [c for c in counts if c is not None]
            m.marker_overhead = overhead
            rnames = data.get("ranges", [])
            per_call = [icount.ranges.get(rid, [None])[-1] for rid in r.get("regions", [])]
            if rnames and per_call and all(pc is not None and len(pc) == len(rnames) for pc in per_call):
                m.by_code = {n: [pc[k] for pc in per_call] for k, n in enumerate(rnames)}
            m.threads_alive = max((icount.threads.get(rid, 0) for rid in r.get("regions", [])), default=None)
            first = [icount.regions.get(rid, [None])[-1] for rid in r.get("parity_regions", [])[:1]]
            if first and first[0] is not None:
                m.extra["first_call_instructions"] = first[0] - (overhead or 0)
        else:
            m.latency_ms = list(r.get("wall_ms", []))
            m.extra["cold_start_ms"] = {"load": (r.get("load_program_ms") or 0) + (r.get("load_method_ms") or 0),
                                        "first_inference": r.get("first_call_ms")}
        return {i: m}



class HostTransport(Transport):
    """The host runner in a local folder, pinned to `cpus` (the bench target's CPU set): wall time per call."""

    target = "host"
    measured_on = "host ExecuTorch C++ runner (wall time)"

    def __init__(self, lane: Lane, cpus: list[int] | None = None):
        self.lane, self.cpus = lane, cpus

    def preflight(self, runner) -> dict:
        return {"device": f"host {platform.machine()}", "runner": str(self.lane.runner)}

    def push(self, stage: Path) -> str:
        return str(stage)

    def execute(self, inv, remote: str, timeout: float) -> ExecResult:
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus and hasattr(os, "sched_setaffinity") else None
        try:
            p = subprocess.run([str(self.lane.runner), *inv.argv[1:]], capture_output=True, text=True,
                               timeout=timeout, cwd=remote, preexec_fn=pin,
                               env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        except subprocess.TimeoutExpired:
            return ExecResult(124, f"et_runner timed out after {timeout:.0f}s")
        return ExecResult(p.returncode, (p.stdout or "") + (p.stderr or ""))

    def pull(self, remote: str, names: list[str], stage: Path) -> None:
        pass


def measure_host(manifest, rec, histories: list[int | None], *, runs: int, warmup: int, threads: int = 1,
                 cpus: list[int] | None = None, parity_steps: int = 3) -> dict:
    """Time one .pte through the host C++ runner (`toolkit bench --runtimes executorch-cpp`), one point per history
    (None: a stateless call). Returns the bench worker's result shape; failures as {"ok": False, "error": line}."""
    from toolkit.device.orchestrator import run_cases
    from toolkit.device.plan import build_cases, max_abs_err
    from toolkit.rows import latency_summary

    try:
        lane = build_host()
        points, cold, parity = [], None, None
        for h in histories:
            cases = build_cases(manifest, [rec])
            c = cases[0]
            _, meas = run_cases(HostTransport(lane, cpus), CppRunner(threads=threads, markers=False, history=h),
                                cases, warmup=warmup, runs=runs, parity_steps=parity_steps)
            m = meas[c.index]
            if m.error:
                return {"ok": False, "error": f"et_runner: {m.error}"}
            if c.expected and m.outputs:
                n = min(len(c.expected), len(m.outputs))
                parity = max_abs_err(m.outputs[:n], [{k: v for k, v in e.items() if k in m.outputs[0]}
                                                     for e in c.expected[:n]])
            cold = cold or m.extra.get("cold_start_ms")
            points.append({"latency_ms": latency_summary(m.latency_ms)})
    except ToolkitError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True, "points": points, "memory": {}, "cpus": cpus, "cold_start_ms": cold,
            "timed_call": "et_runner: Method::set_input (every input) + Method::execute, C++ runtime API, no Python",
            "parity_cpp_vs_test_vectors": parity}
