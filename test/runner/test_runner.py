"""Unit tests of sandbox-image/runner.py's pure parts (stdlib unittest; `npm test` runs them).

What needs a container (fork, caps, PID 1) is tested through the server against the real engine;
here: path safety, the job's unpacking, the changed-files diff, the report, the frame writer.
"""

import importlib.util
import io
import json
import os
import struct
import tarfile
import tempfile
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
                                       "traceback", "result", "result_truncated", "deleted", "warnings", "run_ms"})

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


class FileMode(InTempWorkspace):
    def test_a_file_that_cannot_be_opened_is_reported_with_its_real_error(self):
        os.mkdir(os.path.join(runner.WORKSPACE, "not-a-file.py"))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # run_user_code ends its process, as it does in the sandbox
            try:
                os.close(r)
                runner.run_user_code({"mode": "file", "file": "not-a-file.py", "result_limit": 1000}, w)
            finally:
                os._exit(99)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            report = json.loads(f.read())
        os.waitpid(pid, 0)
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


if __name__ == "__main__":
    unittest.main()
