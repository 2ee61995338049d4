"""Unit tests of sandbox-image/runner.py's pure parts (stdlib unittest; `npm test` runs them).

What needs a container (fork, caps, PID 1) is tested through the server against the real engine;
here: path safety, the job's unpacking, the changed-files diff, the report, the frame writer.
"""

import base64
import contextlib
import fcntl
import importlib.util
import io
import json
import os
import signal
import struct
import tarfile
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("runner", os.path.join(HERE, "..", "..", "sandbox-image", "runner.py"))
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


class Captured:
    """A Channel whose frames are kept: [(kind, payload)]."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()  # not a pipe: a pipe's buffer would block the writer
        self.channel = runner.Channel(self.file.fileno())

    def frames(self):
        self.channel.flush()  # what the runner holds for its next write
        self.file.seek(0)
        self.data = self.file.read()
        out, at = [], 0
        while at < len(self.data):
            kind = bytes(self.data[at:at + 1])
            (length,) = struct.unpack(">I", self.data[at + 1:at + 5])
            out.append((kind, bytes(self.data[at + 5:at + 5 + length])))
            at += 5 + length
        return out


def job_tar(job, files=(), dirs=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        body = json.dumps(job).encode()
        info = tarfile.TarInfo("job.json")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 1000
            archive.addfile(info, io.BytesIO(content))
    buf.seek(0)
    return buf


class InTempWorkspace(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.saved = runner.WORKSPACE, runner.WHEELHOUSE
        runner.WORKSPACE = os.path.join(self.tmp.name, "workspace")
        runner.WHEELHOUSE = os.path.join(self.tmp.name, "wheelhouse")
        os.makedirs(runner.WORKSPACE)

    def tearDown(self):
        runner.WORKSPACE, runner.WHEELHOUSE = self.saved
        self.tmp.cleanup()


class SafeTarget(InTempWorkspace):
    def test_accepts_plain_paths_under_the_two_roots(self):
        self.assertEqual(runner.safe_target("workspace/a/b.py"), (runner.WORKSPACE, "a/b.py"))
        self.assertEqual(runner.safe_target("workspace/dir/"), (runner.WORKSPACE, "dir"))
        self.assertEqual(runner.safe_target("wheelhouse/x-1.0-py3-none-any.whl"), (runner.WHEELHOUSE, "x-1.0-py3-none-any.whl"))

    def test_refuses_anything_else(self):
        for name in ("../x", "workspace/../x", "workspace/a/../../x", "workspace/", "workspace", "other/x",
                     "workspace/a//b", "workspace/./a", "workspace/a\0b", "/workspace/x", "job.json"):
            self.assertIsNone(runner.safe_target(name), name)


class NamesInBytes(InTempWorkspace):
    """The same rules as the server's tar filter (server/relative-path.ts), counted in bytes of UTF-8."""

    def test_parts_and_paths_are_counted_in_bytes(self):
        self.assertTrue(runner.clean_name("\u20ac" * 85))  # 255 bytes
        self.assertFalse(runner.clean_name("\u20ac" * 86))  # 258 bytes, 86 characters
        self.assertFalse(runner.clean_name("\u20ac" * 200))  # the 600 bytes
        self.assertTrue(runner.clean_name("/".join(["d" * 200] * 5)))  # 1004 bytes
        self.assertFalse(runner.clean_name("/".join(["\u20ac" * 70] * 5)))  # 1054 bytes
        self.assertIsNone(runner.safe_target("workspace/" + "\u20ac" * 86))

    def test_names_that_are_not_utf8_or_have_backslashes_are_refused(self):
        self.assertFalse(runner.clean_name(os.fsdecode(b"bad\xff")))
        self.assertFalse(runner.clean_name("a\\b"))

    def test_a_name_the_server_would_drop_stays_in_the_sandbox(self):
        ws = runner.WORKSPACE
        deep = "/".join(["\u20ac" * 80] * 5)  # 1204 bytes: Linux allows it, the server would drop it
        os.makedirs(os.path.join(ws, os.path.dirname(deep)))
        for name in (deep, "ok.txt", os.fsdecode(b"raw\xff")):
            with open(os.path.join(ws, name), "wb") as f:
                f.write(b"x")
        captured = Captured()
        self.assertEqual(runner.send_changed_files(captured.channel, {}, workspace=ws), [])
        archive = tarfile.open(fileobj=io.BytesIO(b"".join(p for _, p in captured.frames())), mode="r:")
        names = archive.getnames()
        self.assertIn("workspace/ok.txt", names)
        self.assertFalse([n for n in names if len(n.encode()) > 1024 + 10 or "raw" in n], names)


class ReceiveAndDiff(InTempWorkspace):
    def test_unpacks_the_job_and_sends_back_only_what_changed(self):
        job = {"protocol": 7, "mode": "code", "code": "pass"}
        stream = job_tar(job, files=[("workspace/keep.txt", b"same"), ("workspace/edit.txt", b"old"),
                                     ("workspace/gone.txt", b"bye"), ("workspace/d/in.txt", b"x"),
                                     ("workspace/../escape.txt", b"no"), ("elsewhere/x", b"no")],
                         dirs=["workspace/d"])
        got, manifest = runner.receive_job(stream)
        self.assertEqual(got, job)
        self.assertEqual(sorted(manifest), ["d", "d/in.txt", "edit.txt", "gone.txt", "keep.txt"])
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "escape.txt")))

        ws = runner.WORKSPACE
        with open(os.path.join(ws, "edit.txt"), "wb") as f:
            f.write(b"new content")
        os.unlink(os.path.join(ws, "gone.txt"))
        with open(os.path.join(ws, "new.txt"), "wb") as f:
            f.write(b"fresh")
        os.mkdir(os.path.join(ws, "newdir"))
        os.symlink("/etc/passwd", os.path.join(ws, "link"))
        os.mkfifo(os.path.join(ws, "fifo"))

        captured = Captured()
        deleted = runner.send_changed_files(captured.channel, manifest, workspace=ws)
        self.assertEqual(deleted, ["gone.txt"])
        frames = captured.frames()
        self.assertTrue(frames and all(kind == b"f" for kind, _ in frames))
        archive = tarfile.open(fileobj=io.BytesIO(b"".join(p for _, p in frames)), mode="r:")
        members = {m.name: m for m in archive.getmembers()}
        self.assertEqual(sorted(members), ["workspace/edit.txt", "workspace/new.txt", "workspace/newdir"])
        self.assertEqual(archive.extractfile(members["workspace/edit.txt"]).read(), b"new content")
        self.assertTrue(members["workspace/newdir"].isdir())

    def test_a_file_a_living_process_holds_a_lease_on_is_never_waited_for_and_leased_is_told(self):
        path = os.path.join(runner.WORKSPACE, "held.txt")
        with open(path, "w") as f:
            f.write("kept")
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # holds a write lease and ignores the break's signal: the lease stays for a while
            signal.signal(signal.SIGIO, signal.SIG_IGN)
            fcntl.fcntl(os.open(path, os.O_WRONLY), fcntl.F_SETLEASE, fcntl.F_WRLCK)
            os.write(ready_w, b"1")
            time.sleep(60)
            os._exit(0)
        try:
            os.close(ready_w)
            self.assertEqual(os.read(ready_r, 1), b"1")
            told = []

            def leased():
                told.append(True)
                raise KeyboardInterrupt  # read_changes raises Moved: the walk ends at once

            with self.assertRaises(KeyboardInterrupt):
                runner.send_changed_files(Captured().channel, {}, workspace=runner.WORKSPACE, leased=leased)
            self.assertEqual(told, [True])
            warnings = []
            runner.send_changed_files(Captured().channel, {}, workspace=runner.WORKSPACE, warnings=warnings)
            self.assertEqual(len(warnings), 1)
            self.assertRegex(warnings[0], r"^held\.txt: could not be read \(.*\), so it was not kept$")
        finally:
            os.close(ready_r)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


class ContextJobs(InTempWorkspace):
    """A context's stdin: one framed tar a job, several jobs on one stream; its workspace mirrored."""

    @staticmethod
    def framed(tar, size=1000):
        raw = tar.getvalue()
        return b"".join(struct.pack(">I", len(raw[i:i + size])) + raw[i:i + size]
                        for i in range(0, len(raw), size)) + struct.pack(">I", 0)

    def test_jobs_one_after_another_on_one_stream(self):
        first = {"protocol": 7, "mode": "context"}
        second = {"protocol": 7, "mode": "code", "code": "x"}
        stream = self.framed(job_tar(first)) + self.framed(job_tar(second, files=[("workspace/a.txt", b"a" * 5000)]))
        r, w = os.pipe()
        os.write(w, stream[1:])  # main() has read the first byte already, to tell a context from a one-shot job
        os.close(w)
        reader = runner.FramedInput(r, stream[:1])
        self.assertEqual(runner.receive_job(reader)[0], first)
        reader.finish()
        reader = runner.FramedInput(r)
        job, manifest = runner.receive_job(reader)
        reader.finish()
        self.assertEqual((job, sorted(manifest)), (second, ["a.txt"]))
        self.assertFalse(runner.FramedInput(r).begin(), "stdin closed between jobs: no job")
        os.close(r)

    def test_the_workspace_is_mirrored_to_what_the_call_brought(self):
        ws = runner.WORKSPACE
        for rel in ("old.txt", "d/old.txt", "d/keep.txt", "gone/x.txt"):
            os.makedirs(os.path.dirname(os.path.join(ws, rel)), exist_ok=True)
            with open(os.path.join(ws, rel), "w") as f:
                f.write(rel)
        os.symlink("/etc/passwd", os.path.join(ws, "link"))
        runner.mirror_workspace({"d": runner.DIRECTORY, "d/keep.txt": (1, 1, 1)}, workspace=ws)
        found = sorted(os.path.relpath(os.path.join(root, n), ws) for root, dirs, files in os.walk(ws) for n in dirs + files)
        self.assertEqual(found, ["d", "d/keep.txt"])


class Report(unittest.TestCase):
    job = {"result_limit": 5, "variable": None}

    def test_a_clean_run(self):
        report = runner.build_report({"exit_code": 0, "child": {"status": "ok", "result": "1234567"}}, self.job,
                                     deleted=["a"], run_ms=3)
        self.assertEqual(report["protocol"], runner.PROTOCOL)
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["result"], "12345", "capped at result_limit")
        self.assertEqual(report["deleted"], ["a"])
        self.assertEqual(report["run_ms"], 3)
        self.assertEqual(set(report), {"protocol", "exit_code", "timed_out", "truncated", "oom_killed", "status", "error",
                                       "traceback", "result", "result_truncated", "value", "outputs", "outputs_truncated",
                                       "deleted", "warnings", "run_ms"})
        self.assertEqual((report["value"], report["outputs"], report["outputs_truncated"]), (None, [], False))

    def test_no_word_from_the_child_is_killed_or_exit(self):
        killed = runner.build_report({"exit_code": 137, "signaled": True, "child": {}}, self.job)
        self.assertEqual(killed["status"], "killed")
        left = runner.build_report({"exit_code": 3, "signaled": False, "child": {}}, self.job)
        self.assertEqual(left["status"], "exit")

    def test_exit_zero_before_the_variable_was_read(self):
        report = runner.build_report({"exit_code": 0, "child": {}}, {"result_limit": 100, "variable": "x"})
        self.assertEqual(report["status"], "exception")
        self.assertEqual(report["error"], "The code exited before variable 'x' could be read")

    def test_the_childs_words_are_hostile(self):
        report = runner.build_report({"exit_code": 1, "child": {"status": "exception", "error": ["not", "a str"],
                                                                 "traceback": 7, "result_truncated": "yes"}}, self.job)
        self.assertIsNone(report["error"])
        self.assertIsNone(report["traceback"])
        self.assertFalse(report["result_truncated"])

    def test_extra_fields_of_a_mode(self):
        report = runner.build_report({"exit_code": 0, "child": {"status": "ok"}}, self.job, packages={"a": "1"}, changed=[])
        self.assertEqual(report["packages"], {"a": "1"})
        self.assertEqual(report["changed"], [])


PNG = base64.b64encode(runner.PNG_MAGIC + b"IHDR").decode()


def reap_user_process(pid):
    """The user's process stops once it has reported (run_user_code); continued, it exits.
    Returns (whether it stopped, its exit code)."""
    _, status = os.waitpid(pid, os.WUNTRACED)
    stopped = os.WIFSTOPPED(status)
    if stopped:
        os.kill(pid, signal.SIGCONT)
        _, status = os.waitpid(pid, 0)
    return stopped, os.waitstatus_to_exitcode(status)


def run_child(job):
    """run_user_code in a forked child, as in the sandbox: (its report, its stdout, its stderr)."""
    files = [tempfile.TemporaryFile() for _ in range(3)]
    pid = os.fork()
    if pid == 0:
        try:
            for fd, f in zip((runner.REPORT_FD, 1, 2), files):
                os.dup2(f.fileno(), fd)
            runner.run_user_code(dict({"mode": "code", "result_limit": 1000, "max_outputs": 16, "outputs_limit": 1 << 20}, **job),
                                 runner.user_main())
        finally:
            os._exit(99)
    reap_user_process(pid)
    report, out, err = (f.seek(0) or f.read() for f in files)
    for f in files:
        f.close()
    return json.loads(report), out.decode(), err.decode()


class Rich:
    """An object as libraries make them: several forms, one of which fails."""

    def __repr__(self):
        return "Rich()"

    def _repr_html_(self):
        return "<table><tr><td>1</td></tr></table>"

    def _repr_png_(self):
        return base64.b64decode(PNG)

    def _repr_markdown_(self):
        raise ValueError("no markdown today")


class AnswersEverything:
    """Like a mock: every attribute exists. It must not pass for an object with rich forms."""

    def __getattr__(self, name):
        return lambda *a, **k: "<b>fake</b>"

    def __repr__(self):
        return "AnswersEverything()"


class LastExpression(InTempWorkspace):
    def test_the_last_expression_is_the_value(self):
        report, out, _ = run_child({"code": "x = 2\nprint('once')\nx + 3"})
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["value"], "5")
        self.assertEqual(out, "once\n", "side effects happen once")
        self.assertEqual(report["outputs"], [], "a plain value gives no outputs: value says it all")

    def test_no_value_for_a_statement_or_none(self):
        for code in ("x = 5", "print(1)", "if True:\n    7", "None", "", "def f(): pass"):
            report, _, _ = run_child({"code": code})
            self.assertEqual(report["status"], "ok", code)
            self.assertNotIn("value", report, code)

    def test_an_error_in_the_last_expression_names_its_line(self):
        report, _, err = run_child({"code": "x = 1\n\n1 / (x - 1)"})
        self.assertEqual(report["status"], "exception")
        self.assertEqual(report["error"], "ZeroDivisionError: division by zero (line 3)")
        self.assertIn('File "<code>", line 3, in <module>', report["traceback"])
        self.assertNotIn("value", report)

    def test_a_repr_that_fails_leaves_no_value_and_the_run_a_success(self):
        code = "class B:\n    def __repr__(self):\n        raise RuntimeError('no repr')\nB()"
        report, _, err = run_child({"code": code})
        self.assertEqual(report["status"], "ok")
        self.assertNotIn("value", report)
        self.assertIn("RuntimeError: no repr", err)

    def test_split_keeps_the_users_lines(self):
        body, last = runner.split_last_expression(b"a = 1\n\n\na * 2", "<code>")
        namespace = {}
        exec(body, namespace)
        self.assertEqual(eval(last, namespace), 2)
        self.assertEqual({line for _, _, line in last.co_lines() if line}, {4})
        self.assertIsNone(runner.split_last_expression(b"a = 1", "<code>")[1])
        with self.assertRaises(SyntaxError):
            runner.split_last_expression(b"a = (", "<code>")


class Outputs(InTempWorkspace):
    def test_display_twice_gives_two_outputs_in_order(self):
        report, _, _ = run_child({"code": "display('first')\ndisplay('second')"})
        self.assertEqual(report["outputs"], [{"mime": "text/plain", "data": "'first'", "source": "display"},
                                             {"mime": "text/plain", "data": "'second'", "source": "display"}])
        self.assertIs(report["outputs_truncated"], False)

    def test_rich_forms_richest_first_then_text_plain(self):
        self.assertEqual(runner.mime_bundle(Rich()), [("image/png", PNG), ("text/html", "<table><tr><td>1</td></tr></table>"),
                                                      ("text/plain", "Rich()")])
        self.assertEqual(runner.mime_bundle(AnswersEverything()), [("text/plain", "AnswersEverything()")])
        self.assertEqual(runner.mime_bundle(Rich), [("text/plain", repr(Rich))], "a class is not its instances")

    def test_a_mimebundle_and_the_forms_that_are_not_what_they_say(self):
        class Bundle:
            def _repr_mimebundle_(self, include=None, exclude=None):
                return {"text/html": "<i>b</i>", "application/json": {"a": [1]}, "application/javascript": "alert(1)",
                        "image/png": "not base64!", "text/plain": "bundle"}, {}

        self.assertEqual(runner.mime_bundle(Bundle()), [("text/html", "<i>b</i>"), ("application/json", '{"a": [1]}'),
                                                        ("text/plain", "bundle")])
        self.assertIsNone(runner.encode_form("image/png", b"GIF89a"), "a PNG is a PNG")
        self.assertEqual(runner.encode_form("image/svg+xml", "<svg/>"), base64.b64encode(b"<svg/>").decode())
        self.assertIsNone(runner.encode_form("application/json", {"nan": float("nan")}))

    def test_the_last_expressions_rich_forms_are_outputs(self):
        code = "class T:\n    def _repr_html_(self):\n        return '<table></table>'\n    def __repr__(self):\n        return 'T()'\nT()"
        report, _, _ = run_child({"code": code})
        self.assertEqual(report["value"], "T()")
        self.assertEqual(report["outputs"], [{"mime": "text/html", "data": "<table></table>", "source": "value"},
                                             {"mime": "text/plain", "data": "T()", "source": "value"}])

    def test_the_caps_keep_the_first_and_say_so(self):
        report, _, _ = run_child({"code": "for i in range(5):\n    display(i)", "max_outputs": 3})
        self.assertEqual([o["data"] for o in report["outputs"]], ["0", "1", "2"])
        self.assertIs(report["outputs_truncated"], True)
        report, _, _ = run_child({"code": "display('a' * 50)\ndisplay('b' * 50)\ndisplay('c')", "outputs_limit": 100})
        self.assertEqual([len(o["data"]) for o in report["outputs"]], [52])
        self.assertIs(report["outputs_truncated"], True)
        report, _, _ = run_child({"code": "display(1)\ndisplay(2)", "max_outputs": 2})
        self.assertIs(report["outputs_truncated"], False, "exactly at the cap is not past it")

    def test_a_figure_is_its_png_at_its_own_dpi(self):
        class Figure:  # what Outputs.figure asks of a matplotlib Figure, so the host needs no matplotlib
            axes, lines, dpi = ["ax"], [], 72

            def savefig(self, out, format, dpi):
                self.asked = (format, dpi)
                out.write(runner.PNG_MAGIC + b"IHDR")

        outputs, fig = runner.Outputs(5, 1 << 20), Figure()
        outputs.figure(fig, "figure")
        self.assertEqual(fig.asked, ("png", 72))
        self.assertEqual(outputs.items, [{"mime": "image/png", "data": PNG, "source": "figure"}])

    def test_what_was_shown_before_an_error_is_kept(self):
        report, _, _ = run_child({"code": "display('before')\nraise ValueError('after')"})
        self.assertEqual(report["status"], "exception")
        self.assertEqual([o["data"] for o in report["outputs"]], ["'before'"])

    def test_ipython_display_wrappers(self):
        module = type(runner)("IPython.display")
        runner.ipython_display(module)
        self.assertEqual(runner.mime_bundle(module.HTML("<b>x</b>")), [("text/html", "<b>x</b>"), ("text/plain", "<IPython.core.display.HTML object>")])
        self.assertEqual(runner.mime_bundle(module.Markdown("# t"))[0], ("text/markdown", "# t"))
        path = os.path.join(runner.WORKSPACE, "a.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(PNG))
        self.assertEqual(runner.mime_bundle(module.Image(filename=path))[0], ("image/png", PNG))
        self.assertIs(module.display, runner.display)

    def test_a_real_ipython_comes_first(self):
        import importlib.machinery

        real = importlib.machinery.PathFinder.find_spec("IPython") is not None
        self.assertEqual(runner.RunnerModules.find_spec("IPython") is None, real)


class CleanOutputs(unittest.TestCase):
    """The user's process writes its report itself: its outputs are hostile."""

    def test_keeps_only_what_the_server_takes(self):
        outputs = [
            {"mime": "text/plain", "data": "ok", "source": "display"},
            {"mime": "text/javascript", "data": "alert(1)", "source": "display"},
            {"mime": "image/png", "data": "%%%", "source": "figure"},
            {"mime": "image/png", "data": base64.b64encode(b"<svg onload=alert(1)>").decode(), "source": "figure"},
            {"mime": "text/html", "data": ["not", "text"], "source": "display"},
            {"mime": "text/html", "data": "<b>", "source": "server"},
            "not even an object",
            {"mime": "image/png", "data": PNG, "source": "figure", "extra": "dropped"},
        ]
        kept, truncated = runner.clean_outputs(outputs, False, 16, 1000)
        self.assertEqual(kept, [{"mime": "text/plain", "data": "ok", "source": "display"},
                                {"mime": "image/png", "data": PNG, "source": "figure"}])
        self.assertIs(truncated, False)

    def test_caps_and_flags(self):
        many = [{"mime": "text/plain", "data": "x" * 10, "source": "display"}] * 5
        self.assertEqual([len(runner.clean_outputs(many, False, 3, 1000)[0]), runner.clean_outputs(many, False, 3, 1000)[1]], [3, True])
        self.assertEqual([len(runner.clean_outputs(many, False, 16, 25)[0]), runner.clean_outputs(many, False, 16, 25)[1]], [2, True])
        self.assertEqual(runner.clean_outputs("nope", "yes", 16, 1000), ([], False))
        self.assertEqual(runner.clean_outputs([], True, 16, 1000), ([], True), "the child may say it left some out")

    def test_build_report_cleans_them(self):
        report = runner.build_report({"exit_code": 0, "child": {"status": "ok", "value": "v" * 10, "outputs": [
            {"mime": "application/x-evil", "data": "x", "source": "value"}]}}, {"result_limit": 5, "max_outputs": 16, "outputs_limit": 100})
        self.assertEqual((report["value"], report["outputs"]), ("vvvvv", []))


class Preload(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.saved = runner.VENV
        runner.VENV = os.path.join(self.tmp.name, "venv")

    def tearDown(self):
        runner.VENV = self.saved
        self.tmp.cleanup()

    def site(self, *entries):
        site = os.path.join(runner.VENV, "lib", "python3.11", "site-packages")
        for entry in entries:
            if entry.endswith("/"):
                os.makedirs(os.path.join(site, entry))
            else:
                os.makedirs(site, exist_ok=True)
                open(os.path.join(site, entry), "w").close()
        return site

    def test_top_level_names(self):
        self.assertEqual([runner.top_level_name(e) for e in ("numpy", "six.py", "_cffi.cpython-311-x86_64-linux-gnu.so",
                                                               "numpy-2.0.dist-info", "x.pth", "__pycache__", "not-a-name")],
                         ["numpy", "six", "_cffi", None, None, None, None])

    def test_what_the_tenant_shadows(self):
        self.site("json/", "colorsys.py", "zz_only_the_tenant_has_it/", "json-9.dist-info/")
        self.assertEqual(runner.shadowed_modules(runner.venv_site_dirs(), sys.path), ["colorsys", "json"])

    def test_a_module_that_fails_does_not_stop_the_others(self):
        for name in ("wave", "zz_no_such_module"):
            sys.modules.pop(name, None)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            runner.preload(["zz_no_such_module", "wave"])
        self.assertIn("wave", sys.modules)
        self.assertIn("runner: preloading zz_no_such_module failed: ModuleNotFoundError", err.getvalue())

    def test_nothing_when_the_tenant_shadows_the_image(self):
        self.site("json/")
        sys.modules.pop("wave", None)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            runner.preload(["wave"])
        self.assertNotIn("wave", sys.modules, "the tenant's own json must be the one its code imports")
        self.assertIn("the tenant's packages shadow the image's json", err.getvalue())


class FileMode(InTempWorkspace):
    def test_a_file_that_cannot_be_opened_is_reported_with_its_real_error(self):
        os.mkdir(os.path.join(runner.WORKSPACE, "not-a-file.py"))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # run_user_code ends its process, as it does in the sandbox
            try:
                os.close(r)
                os.dup2(w, runner.REPORT_FD)
                os.close(w)
                runner.run_user_code({"mode": "file", "file": "not-a-file.py", "result_limit": 1000}, runner.user_main())
            finally:
                os._exit(99)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = json.loads(f.read())
        reap_user_process(pid)
        self.assertEqual(report["status"], "exception")
        self.assertTrue(report["error"].startswith("IsADirectoryError: "), report["error"])


class Packages(unittest.TestCase):
    """The pure parts of an install: pip's report read, the caps' arithmetic, the disk use counted."""

    job = {"packages_max_bytes": 10 << 20, "packages_max_files": 100}

    def report(self, install):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"version": "1", "install": install}, f)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_reads_what_pip_would_install_normalized_with_what_each_requires(self):
        path = self.report([
            {"download_info": {"url": "file:///wheelhouse/Evil_Pkg-0.1-py3-none-any.whl", "archive_info": {}},
             "is_direct": False, "requested": False, "metadata": {"name": "Evil_Pkg", "version": "0.1"}},
            {"download_info": {"url": "https://files.example/goodpkg-1.0.tar.gz#sha256=00"}, "is_direct": False,
             "requested": True, "metadata": {"name": "goodpkg", "version": "1.0", "requires_dist": [
                 "evil.pkg (>=0.1)", "Mid[extra]>=2; python_version > '3'", "other ; extra == 'docs'", "evil-pkg<1"]}},
        ])
        self.assertEqual(runner.read_resolution(path), [
            {"name": "evil-pkg", "version": "0.1", "requested": False, "requires": [], "sdist": False, "direct": False},
            {"name": "goodpkg", "version": "1.0", "requested": True, "requires": ["evil-pkg", "mid", "other"],
             "sdist": True, "direct": False},
        ])
        self.assertEqual(runner.pins(runner.read_resolution(path)), ["evil-pkg==0.1", "goodpkg==1.0"])

    def test_a_report_that_is_not_pips_fails_to_read(self):
        for content in ('{"install": [{"metadata": {}}]}', "[]", "not json"):
            with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
                f.write(content)
                f.flush()
                with self.assertRaises((KeyError, TypeError, ValueError)):
                    runner.read_resolution(f.name)

    def test_the_caps_name_their_setting(self):
        self.assertIsNone(runner.over_cap(self.job, (1 << 20, 10)))
        self.assertEqual(runner.over_cap(self.job, (11 << 20, 10)),
                         "This tenant's packages already use 11 MiB, over the cap of 10 MiB (PACKAGES_MAX_MB)")
        self.assertEqual(runner.over_cap(self.job, (1 << 20, 90), (1 << 20, 20)),
                         "This tenant's packages would come to 110 files and directories, over the cap of 100 "
                         "(PACKAGES_MAX_FILES); nothing was installed")
        self.assertIsNone(runner.over_cap(self.job, (5 << 20, 50), (5 << 20, 50)), "exactly at the caps fits")

    def test_disk_use_counts_blocks_and_every_entry_not_the_apparent_size(self):
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "a", "b"))
            for i in range(20):
                open(os.path.join(root, "a", "b", str(i)), "w").close()
            with open(os.path.join(root, "one-byte"), "w") as f:
                f.write("x")
            with open(os.path.join(root, "sparse"), "wb") as f:
                f.truncate(1 << 30)  # a GiB that takes no disk
            os.symlink("/etc", os.path.join(root, "link"))
            used, entries = runner.usage(root)
            self.assertEqual(entries, 2 + 20 + 3)
            self.assertLess(used, 1 << 20, "the sparse file's apparent size is not disk use")
            self.assertGreater(used, 0)


class Frames(unittest.TestCase):
    def test_splits_payloads_into_frames_of_at_most_64_kib(self):
        captured = Captured()
        captured.channel.send(b"o", b"x" * (64 * 1024 + 10))
        captured.channel.send(b"z", b"")
        frames = captured.frames()
        self.assertEqual([(k, len(p)) for k, p in frames], [(b"o", 65536), (b"o", 10), (b"z", 0)])

    def test_output_nobody_streams_goes_with_the_report_in_one_write(self):
        captured = Captured()
        captured.channel.output(b"o", b"as it comes")
        self.assertGreater(os.fstat(captured.file.fileno()).st_size, 0, "streamed: written at once")
        captured = Captured()
        captured.channel.streaming = False
        captured.channel.output(b"o", b"hi")
        captured.channel.hold(b"f", b"tar")
        self.assertEqual(os.fstat(captured.file.fileno()).st_size, 0, "not streamed: it waits")
        captured.channel.finish({"status": "ok"})
        self.assertEqual(captured.frames(), [(b"o", b"hi"), (b"f", b"tar"), (b"r", b'{"status": "ok"}'), (b"z", b"")])

    def test_file_frames_ask_once_before_the_first_leaves_and_take_nothing_once_refused(self):
        captured = Captured()
        asked = []

        def refuse():
            asked.append(True)
            raise runner.Moved()

        files = runner.FileFrames(captured.channel, refuse)
        files.write(b"x" * 1000)
        self.assertEqual(asked, [], "held: nothing would leave yet")
        with self.assertRaises(runner.Moved):
            files.write(b"y" * runner.MAX_FRAME)
        files.write(b"z" * 10)  # the tar's close writes its last block all the same
        self.assertEqual(asked, [True])
        self.assertEqual(os.fstat(captured.file.fileno()).st_size, 0, "nothing was sent")
        self.assertEqual(captured.channel.held, runner.frames(b"f", b"x" * 1000))

    def test_file_frames_that_may_leave_go_on_as_usual(self):
        captured = Captured()
        asked = []
        files = runner.FileFrames(captured.channel, lambda: asked.append(True))
        for _ in range(3):
            files.write(b"y" * runner.MAX_FRAME)
        self.assertEqual(asked, [True])
        self.assertEqual([(k, len(p)) for k, p in captured.frames()], [(b"f", runner.MAX_FRAME)] * 3)


class Exactly(unittest.TestCase):
    def test_a_file_is_read_as_the_size_its_header_says_cut_or_padded(self):
        longer = runner.Exactly(io.BytesIO(b"abcdef"), 4)
        self.assertEqual((longer.read(3), longer.read(3), longer.read(3), longer.short), (b"abc", b"d", b"", False))
        shorter = runner.Exactly(io.BytesIO(b"ab"), 4)
        self.assertEqual((shorter.read(10), shorter.short), (b"ab\0\0", True))


class StoppedProcess(unittest.TestCase):
    """The user's process, reported and stopped, is left so while the workspace is read; the runner
    must learn whether anything continued it meanwhile."""

    def test_a_stopped_process_is_still_stopped_until_something_continues_it(self):
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
            while True:  # continued, it lives on until killed: an exit would race the checks below
                signal.pause()
        try:
            _, status = os.waitpid(pid, os.WUNTRACED)
            self.assertTrue(os.WIFSTOPPED(status))
            self.assertTrue(runner.still_stopped(pid))
            self.assertTrue(runner.still_stopped(pid), "asking changes nothing")
            os.kill(pid, signal.SIGCONT)
            self.assertFalse(runner.still_stopped(pid), "continued")
        finally:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.assertFalse(runner.still_stopped(pid), "gone")


class UserProcess(InTempWorkspace):
    """The user's process is started before its job (a warm container's while it waits in the pool),
    gets the job through its pipe, and stops once it has reported; or it becomes a context's kernel."""

    JOB = {"protocol": runner.PROTOCOL, "mode": "code", "timeout_s": 10, "output_limit": 1 << 16,
           "result_limit": 1 << 16, "max_outputs": 4, "outputs_limit": 1 << 16}

    def read_until_eof(self, fd):
        os.set_blocking(fd, True)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def test_the_job_comes_after_it_is_ready_and_it_stops_once_it_reported(self):
        for fresh in (False, True):
            with self.subTest(fresh=fresh):
                self.a_job_after_ready(runner.spawn(modules=["json"], fresh=fresh))

    def a_job_after_ready(self, child):
        try:
            self.assertTrue(child.ready)
            child.start({**self.JOB, "code": "import os\nprint(os.environ['HTTP_PROXY'])\n6 * 7",
                         "proxy": "http://exec-1:secret@proxy:3128"})
            self.assertEqual(self.read_until_eof(child.out_r), b"http://exec-1:secret@proxy:3128\n")
            report = runner.parse_report(self.read_until_eof(child.rep_r))
            self.assertEqual((report["status"], report["value"], report["exit_code"]), ("ok", "42", 0))
            self.assertEqual(reap_user_process(child.pid), (True, 0),
                             "it waits, stopped, while the runner reads the workspace; continued, it exits with its code")
        finally:
            child.close()

    def test_a_cold_job_runs_at_once_and_the_code_holds_only_its_own_descriptors(self):
        # The listing's own descriptor is the 4: the runner's (its channel, its pipes, the job's and
        # the ready pipe, the OOM counter) are none of the code's.
        code = "import os\nprint(sorted(os.listdir('/proc/self/fd'), key=int))"
        for child in (runner.spawn(job={**self.JOB, "code": code}), runner.spawn(), runner.spawn(modules=["json"], fresh=True)):
            try:
                if child.go_w is not None:
                    child.start({**self.JOB, "code": code})
                self.assertEqual(self.read_until_eof(child.out_r), b"['0', '1', '2', '3', '4']\n")
                self.assertEqual(runner.parse_report(self.read_until_eof(child.rep_r))["status"], "ok")
                self.assertEqual(reap_user_process(child.pid), (True, 0))
            finally:
                child.close()

    def test_its_exit_code_is_in_its_report_and_its_exit(self):
        child = runner.spawn()
        try:
            child.start({**self.JOB, "code": "import sys\nsys.exit(3)"})
            self.assertEqual(runner.parse_report(self.read_until_eof(child.rep_r))["exit_code"], 3)
            self.assertEqual(reap_user_process(child.pid), (True, 3))
        finally:
            child.close()

    def test_it_becomes_a_contexts_kernel(self):
        child = runner.spawn()
        try:
            runner.Kernel(child)
            os.set_blocking(child.rep_r, True)
            for code, value in (("x = 20", None), ("x + 22", "42")):
                runner.write_all(child.go_w, runner.message({**self.JOB, "code": code}))
                report = runner.read_message(child.rep_r)
                self.assertEqual((report["status"], report.get("value"), report["exit_code"]), ("ok", value, 0))
            os.close(child.go_w)
            child.go_w = None
            _, status = os.waitpid(child.pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0, "its pipe closed, the kernel ends")
        finally:
            child.close()

    def test_a_user_process_without_a_job_goes(self):
        child = runner.spawn()
        child.discard()
        with self.assertRaises(ChildProcessError):
            os.waitpid(child.pid, os.WNOHANG)

    def test_a_command_gets_the_proxy(self):
        child = runner.spawn(argv=["/bin/sh", "-c", 'echo "proxy=$HTTP_PROXY"'], proxy="http://exec-1:secret@proxy:3128")
        try:
            self.assertEqual(self.read_until_eof(child.out_r), b"proxy=http://exec-1:secret@proxy:3128\n")
            _, status = os.waitpid(child.pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        finally:
            child.close()

    def test_reports_that_are_not_a_dict_are_empty(self):
        for raw in (b"", b"[1]", b"{", b"\xff", b"[" * 100000):
            self.assertEqual(runner.parse_report(raw), {}, raw[:10])


if __name__ == "__main__":
    unittest.main()
