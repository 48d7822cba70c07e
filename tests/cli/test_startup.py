"""The saxsdog command's start-up: what it imports, what its coordinator starts, how its workers load.

Every millisecond of the start-up counts in the end-to-end figure of a run (about 0.6 frames/s
on 2000 images), so these tests keep heavy packages out of the paths that do not use them: a
change that brings one back fails here, naming the package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

#: Packages neither ``saxsdog --help`` nor the argument parsing needs.
NOT_FOR_THE_PARSER = ("numpy", "numba", "llvmlite", "scipy", "h5py", "jsonschema", "dask", "distributed",
                      "matplotlib", "fabio", "tqdm", "PIL", "zmq", "sqlite3", "saxsdog.protocol.messages",
                      "saxsdog.protocol.signing", "saxsdog.calibration", "saxsdog.pipeline")
#: Packages the coordinator of a ``.chi`` run (``-S``, operator and checked calibration cached)
#: does not import at all, and numba modules that only numba's full start (or a compile) imports.
NOT_FOR_THE_COORDINATOR = ("h5py", "scipy.linalg", "jsonschema", "dask", "distributed", "matplotlib", "fabio",
                           "tqdm", "PIL", "zmq", "pandas", "saxsdog.protocol.messages", "numba.np.linalg",
                           "numba.np.random.generator_methods", "numba.typed.dictimpl")


def _python(code: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_the_command_module_and_its_argument_parsing_import_no_heavy_package():
    loaded = json.loads(_python(f"""
        import json, sys
        import saxsdog.cli.saxsdog as command
        args = command.build_parser().parse_args(["-c", "cal.json", "-t", "2", "-o", "out", "--format",
                                                  "nxcansas-run", "--network", "net.json", "images"])
        assert args.threads == 2 and args.network == "net.json"
        print(json.dumps([m for m in {NOT_FOR_THE_PARSER!r} if m in sys.modules]))
    """))
    assert loaded == []


def test_saxsdog_help_imports_no_heavy_package():
    loaded = json.loads(_python(f"""
        import contextlib, io, json, sys
        from saxsdog.cli.entry import run
        with contextlib.redirect_stdout(io.StringIO()) as text:
            try:
                run("saxsdog", "saxsdog.cli.saxsdog", argv=["--help"])
            except SystemExit as exc:
                assert exc.code == 0
        assert "--network" in text.getvalue() and "--scheduler" in text.getvalue()
        print(json.dumps([m for m in {NOT_FOR_THE_PARSER!r} if m in sys.modules]))
    """))
    assert loaded == []


def test_the_coordinator_runs_without_heavy_packages_and_without_starting_numba(tmp_path, data_dir):
    """A whole ``saxsdog -S`` run of 2 images (calibration cached): the coordinator forks its
    workers without numba's start (the workers load the cached kernels without it) and never
    imports h5py, jsonschema, SciPy's linear algebra, Dask, matplotlib or fabio."""
    from saxsdog import Calibration
    from saxsdog.testing import link_images

    link_images(data_dir / "buf1_00000.tif", tmp_path / "run", 2)
    Calibration(data_dir / "cal.json")  # fills the session's cache: the run loads from it
    out = tmp_path / "out"
    result = json.loads(_python(f"""
        import json, sys
        import saxsdog.pipeline.queue as queue_module
        at_fork = []
        real_start = queue_module.ImageQueue.start
        def start(self):
            at_fork.extend(m for m in {NOT_FOR_THE_COORDINATOR!r} if m in sys.modules)
            return real_start(self)
        queue_module.ImageQueue.start = start
        import saxsdog.cli.saxsdog as command
        code = command.main(["-c", {str(data_dir / "cal.json")!r}, "-t", "2", "-S", "-o", {str(out)!r},
                             {str(tmp_path / "run")!r}])
        print(json.dumps({{"code": code, "at_fork": at_fork,
                          "at_end": [m for m in {NOT_FOR_THE_COORDINATOR!r} if m in sys.modules]}}))
    """))
    assert result == {"code": 0, "at_fork": [], "at_end": []}
    assert len(list(out.glob("*.chi"))) == 2


def test_cached_kernels_load_without_numba_s_start_and_give_the_same_bytes(data_dir):
    """With the cache loader a process integrates and formats a real frame without numba's full
    start (its registries are not imported), byte for byte as a process that started numba;
    a function that is not in the cache is still compiled (numba starts then)."""
    code = """
        import hashlib, json, sys
        import saxsdog.pipeline.queue as queue_module
        from saxsdog import Calibration, read_image
        cal = Calibration({cal!r})
        image = read_image({image!r}).data
        if {light!r}:
            from saxsdog.pipeline.kernel_cache import install_cache_loader
            assert install_cache_loader() and install_cache_loader()  # idempotent
        else:
            queue_module.start_numba()
        chi = b"".join(bytes(b) for b in cal.chi_bytes(cal.curves(image)))
        started_for_the_frame = "numba.np.linalg" in sys.modules
        import numba
        compiled = numba.njit(lambda x: x + 1)(41)  # not in any cache: a compile
        print(json.dumps([hashlib.sha256(chi).hexdigest(), started_for_the_frame, compiled]))
    """
    where = {"cal": str(data_dir / "cal.json"), "image": str(data_dir / "buf1_00000.tif")}
    # first with numba started: it compiles and caches whatever a fresh checkout has not cached yet
    started = json.loads(_python(code.format(light=False, **where)))
    light = json.loads(_python(code.format(light=True, **where)))
    assert started[1] is True and started[2] == 42
    assert light == [started[0], False, 42]


def test_the_cache_loader_leaves_a_process_without_numba_alone(tmp_path):
    """No numba loaded (kernels without it): nothing is installed, numba is not imported."""
    out = _python("""
        import sys
        from saxsdog.pipeline.kernel_cache import install_cache_loader
        print(install_cache_loader(), "numba" in sys.modules)
    """)
    assert out == "False False"



def test_after_the_warm_up_a_worker_s_first_frame_loads_no_compiled_function(tmp_path, data_dir):
    """The warm-up loads the kernels the frames use (a worker's curves have no standard
    deviation unless live curves are on): the first image file loads nothing more."""
    out = _python(f"""
        import gc, json
        import numpy as np
        from numba.core.dispatcher import Dispatcher
        from saxsdog import Calibration
        from saxsdog.pipeline import QueueOptions
        from saxsdog.pipeline.queue import warm_up_kernels
        from saxsdog.pipeline.tasks import ImageTask
        from saxsdog.pipeline.worker import ImageProcessor
        def loaded():
            return sum(len(d.overloads) for d in gc.get_objects() if isinstance(d, Dispatcher))
        cal = Calibration({str(data_dir / "cal.json")!r})
        options = QueueOptions(out_dir={str(tmp_path / "out")!r})
        warm_up_kernels(cal, stddev=options.keep_curves)
        before = loaded()
        processor = ImageProcessor(cal, options, None, map_images=True)
        results = processor.process(ImageTask(path={str(data_dir / "buf1_00000.tif")!r}, root={str(data_dir)!r}))
        print(json.dumps([before > 0, loaded() - before, [r.error for r in results]]))
    """)
    assert json.loads(out) == [True, 0, [None]]
