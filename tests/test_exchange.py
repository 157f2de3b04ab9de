"""Attacks on ``spark_clrs.isolation.exchange``, the parent's only door into a jail's files.

Each test plays the jail: it leaves in the exchange directory what a hostile candidate
could (links to host files, to ``/dev/zero`` and to host folders, FIFOs, hard links,
header and zip bombs, pickles, lying headers) and asserts the effect on the parent and
the host: a one-line :class:`BoundaryError` (never a hang, a ``MemoryError`` or another
exception), bounded parent memory, and victim files and folders outside the workdir
byte-identical. No JAX, no child process.
"""

import hashlib
import io
import os
import pathlib
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
from absl.testing import absltest

from spark_clrs.isolation import exchange

MB = 1 << 20


def _npy_header(shape, descr="<f4", version=1) -> bytes:
  """An .npy header (magic, length, dict), padded as numpy pads it."""
  text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
  prefix = 10 if version == 1 else 12
  pad = (64 - (prefix + len(text) + 1) % 64) % 64
  body = (text + " " * pad + "\n").encode("latin1")
  size = struct.pack("<H", len(body)) if version == 1 else struct.pack("<I", len(body))
  return b"\x93NUMPY" + bytes([version, 0]) + size + body


def _raw_zip(members) -> bytes:
  """A zip built by hand: ``members`` = [(name, data, method, declared_size, crc)], so the
  declared sizes and CRCs can lie (zipfile's writer would not)."""
  out, central = io.BytesIO(), []
  for name, data, method, size, crc in members:
    name_b = name.encode()
    offset = out.tell()
    out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data),
                          size, len(name_b), 0) + name_b + data)
    central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0,
                               crc, len(data), size, len(name_b), 0, 0, 0, 0, 0, offset)
                   + name_b)
  start = out.tell()
  for entry in central:
    out.write(entry)
  end = out.tell()
  out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                        end - start, start, 0))
  return out.getvalue()


def _digest(path: pathlib.Path) -> str:
  """Hash of a file, or of a folder's names, modes and contents (links not followed)."""
  h = hashlib.sha256()
  if path.is_file():
    h.update(path.read_bytes())
    return h.hexdigest()
  for p in sorted(path.rglob("*")):
    h.update(str(p.relative_to(path)).encode())
    h.update(str(p.lstat().st_mode).encode())
    if p.is_file() and not p.is_symlink():
      h.update(p.read_bytes())
  return h.hexdigest()


class _Case(absltest.TestCase):

  def setUp(self):
    super().setUp()
    base = pathlib.Path(self.create_tempdir().full_path)
    self.root = base / "workdir"
    (self.root / "exchange").mkdir(parents=True)
    self.victim = base / "victim.txt"
    self.victim.write_text("TOP-SECRET-CONTENT\n")
    self.victim_dir = base / "victim_dir"
    self.victim_dir.mkdir()
    (self.victim_dir / "keep.npz").write_bytes(b"KEEP")
    self.before = (_digest(self.victim), _digest(self.victim_dir))

  def tearDown(self):
    self.assertEqual((_digest(self.victim), _digest(self.victim_dir)), self.before,
                     "a host file or folder outside the workdir changed")
    super().tearDown()

  def path(self, relpath: str) -> pathlib.Path:
    return self.root / relpath

  def assert_refused(self, fn, pattern: str, *args, **kwargs) -> str:
    with self.assertRaisesRegex(exchange.BoundaryError, pattern) as ctx:
      fn(self.root, *args, **kwargs)
    message = str(ctx.exception)
    self.assertNotIn("TOP-SECRET", message)
    self.assertNotIn("\n", message)
    return message


class ReadTest(_Case):

  def test_round_trips(self):
    exchange.write_bytes(self.root, "exchange/a.bin", b"abc")
    self.assertEqual(exchange.read_bytes(self.root, "exchange/a.bin", max_bytes=3), b"abc")
    exchange.write_bytes(self.root, "exchange/r.json", b'{"x": [1, 2]}')
    self.assertEqual(exchange.read_json(self.root, "exchange/r.json", max_bytes=100),
                     {"x": [1, 2]})
    arrays = {"p|1": np.arange(6, dtype=np.int32).reshape(2, 3), "f": np.asarray(True),
              "w": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2)),
              "e": np.zeros((0, 4), np.float64)}
    for compress in (False, True):
      exchange.save_npz(self.root, "exchange/a.npz", arrays, compress=compress)
      loaded = exchange.load_npz(self.root, "exchange/a.npz", max_bytes=MB)
      self.assertEqual(set(loaded), set(arrays))
      for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
        self.assertEqual(loaded[name].dtype, value.dtype)
    self.assertEqual(exchange.npz_headers(self.root, "exchange/a.npz", max_bytes=MB),
                     {"p|1": ((2, 3), "int32"), "f": ((), "bool"), "w": ((3, 2), "float32"),
                      "e": ((0, 4), "float64")})
    with self.assertRaisesRegex(ValueError, "only numeric arrays"):
      exchange.save_npz(self.root, "exchange/b.npz", {"o": np.array([{}], dtype=object)})

  def test_missing_and_bad_paths(self):
    self.assert_refused(exchange.read_bytes, "exchange/none.npz is missing",
                        "exchange/none.npz", max_bytes=10)
    self.assert_refused(exchange.read_bytes, "is missing", "nodir/x", max_bytes=10)
    for bad in ("exchange/../../victim.txt", "/etc/passwd", "exchange//x", "./x", ""):
      self.assert_refused(exchange.read_bytes, "bad path component|empty path", bad,
                          max_bytes=10)

  def test_symlink_to_a_host_file_or_dev_zero(self):
    os.symlink(self.victim, self.path("exchange/link.npz"))
    os.symlink("/dev/zero", self.path("exchange/zero.npz"))
    for name in ("link.npz", "zero.npz"):
      for fn in (exchange.read_bytes, exchange.load_npz, exchange.npz_headers):
        start = time.monotonic()
        self.assert_refused(fn, "cannot be opened as a plain file", f"exchange/{name}",
                            max_bytes=MB)
        self.assertLess(time.monotonic() - start, 1.0)

  def test_symlinked_directory(self):
    os.symlink(self.victim.parent, self.path("up"))
    self.assert_refused(exchange.read_bytes, "up is not a plain directory",
                        "up/victim.txt", max_bytes=MB)
    self.assert_refused(exchange.open_dir, "not a plain directory", "up")

  def test_fifo_returns_at_once(self):
    os.mkfifo(self.path("exchange/predictions.npz"))
    done = []
    thread = threading.Thread(target=lambda: done.append(self.assert_refused(
        exchange.load_npz, "not a regular file", "exchange/predictions.npz", max_bytes=MB)),
        daemon=True)
    thread.start()
    thread.join(timeout=5)
    self.assertTrue(done, "the parent blocked on a FIFO")

  def test_hard_link_and_directory_refused(self):
    own = self.path("exchange/own.bin")
    own.write_bytes(b"x")
    os.link(own, self.path("exchange/twin.bin"))
    self.assert_refused(exchange.read_bytes, "has 2 hard links", "exchange/twin.bin",
                        max_bytes=10)
    self.path("exchange/dir.npz").mkdir()
    self.assert_refused(exchange.read_bytes, "not a regular file", "exchange/dir.npz",
                        max_bytes=10)

  def test_size_bound(self):
    self.path("exchange/big.bin").write_bytes(b"x" * 1000)
    self.assert_refused(exchange.read_bytes, "has 1000 bytes, over the 999 byte limit",
                        "exchange/big.bin", max_bytes=999)
    self.assertLen(exchange.read_bytes(self.root, "exchange/big.bin", max_bytes=1000), 1000)

  def test_json_bombs(self):
    self.path("exchange/deep.json").write_text("[" * 100_000 + "]" * 100_000)
    self.assert_refused(exchange.read_json, "not valid JSON", "exchange/deep.json",
                        max_bytes=MB)
    self.path("exchange/num.json").write_text("9" * 100_000)
    self.assert_refused(exchange.read_json, "not valid JSON", "exchange/num.json",
                        max_bytes=MB)


class NpzAttackTest(_Case):

  def write(self, name: str, data: bytes) -> str:
    self.path(f"exchange/{name}").write_bytes(data)
    return f"exchange/{name}"

  def test_header_bomb_is_refused_with_bounded_memory(self):
    header = _npy_header((10**12,))
    stored = self.write("bomb.npz", _raw_zip([("x.npy", header, 0, len(header),
                                               zlib.crc32(header))]))
    self.assertLess(len(self.path(stored).read_bytes()), 400)
    declared = 10**12 * 4 + len(header)  # Claims its full size: over any limit.
    honest = self.write("bomb2.npz", _raw_zip([("x.npy", header, 0, declared & 0xFFFFFFFF,
                                                zlib.crc32(header))]))
    tracemalloc.start()
    try:
      self.assert_refused(exchange.load_npz, r"claims float32\[1000000000000\] \(4000000000000 bytes\)",
                          stored, max_bytes=MB)
      self.assert_refused(exchange.npz_headers, "claims", stored, max_bytes=MB)
      self.assert_refused(exchange.load_npz, "bomb2.npz unpacks to .* bytes, over the", honest,
                          max_bytes=MB)
      _, peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    self.assertLess(peak, 4 * MB)

  def test_zip_bomb_member(self):
    header = _npy_header((25 * MB,), "|u1")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    data = compressor.compress(header)
    chunk = bytes(MB)
    for _ in range(25):
      data += compressor.compress(chunk)
      crc = zlib.crc32(chunk, crc)
    data += compressor.flush()
    size = len(header) + 25 * MB
    self.assertLess(len(data), 100_000)
    honest = self.write("zip.npz", _raw_zip([("x.npy", data, 8, size, crc)]))
    lying = self.write("lie.npz", _raw_zip([("x.npy", data, 8, len(header) + 16, crc)]))
    tracemalloc.start()
    try:
      self.assert_refused(exchange.load_npz, f"unpacks to {size} bytes, over the",
                          honest, max_bytes=MB)
      # Declares 16 bytes of data, inflates to 25 MiB: read to 16 bytes, then refused.
      self.assert_refused(exchange.load_npz, "not a valid .npz|claims", lying, max_bytes=MB)
      _, peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
    self.assertLess(peak, 4 * MB)
    small = _npy_header((16,), "|u1")
    lying2 = self.write("lie2.npz", _raw_zip([("x.npy", data, 8, len(small) + 16, crc)]))
    self.assert_refused(exchange.load_npz, "not a valid .npz|claims", lying2,
                        max_bytes=MB)

  def test_truncated_and_corrupt_members(self):
    header = _npy_header((4,))
    body = header + bytes(16)
    bad_crc = self.write("crc.npz", _raw_zip([("x.npy", body, 0, len(body), 1234)]))
    self.assert_refused(exchange.load_npz, "not a valid .npz", bad_crc, max_bytes=MB)
    short = self.write("short.npz", _raw_zip([("x.npy", body[:-4], 0, len(body),
                                               zlib.crc32(body))]))
    self.assert_refused(exchange.load_npz, "not a valid .npz|ends early", short,
                        max_bytes=MB)
    self.assert_refused(exchange.load_npz, "not a valid .npz",
                        self.write("junk.npz", self.victim.read_bytes()), max_bytes=MB)
    dup = self.write("dup.npz", _raw_zip([("x.npy", body, 0, len(body), zlib.crc32(body))] * 2))
    self.assert_refused(exchange.load_npz, "holds array x twice", dup, max_bytes=MB)

  def test_pickles_are_never_loaded(self):
    marker = self.root.parent / "unpickled"

    class Evil:
      def __reduce__(self):
        return (pathlib.Path.touch, (marker,))

    buf = io.BytesIO()
    np.savez(buf, obj=np.array([Evil()], dtype=object))
    name = self.write("pickled.npz", buf.getvalue())
    self.assert_refused(exchange.load_npz, "only bool, integer and float", name,
                        max_bytes=MB)
    self.assertFalse(marker.exists())

  def test_unaccepted_dtypes(self):
    cases = {"strings": np.array(["a"]), "complex": np.zeros(2, np.complex64),
             "struct": np.zeros(2, [("a", "<f4"), ("b", "<i4")])}
    for label, value in cases.items():
      buf = io.BytesIO()
      np.savez(buf, x=value)
      self.assert_refused(exchange.load_npz, "only bool, integer and float",
                          self.write(f"{label}.npz", buf.getvalue()), max_bytes=MB)
    swapped = _npy_header((2,), ">f4") + bytes(8)
    name = self.write("swapped.npz", _raw_zip([("x.npy", swapped, 0, len(swapped),
                                                 zlib.crc32(swapped))]))
    self.assert_refused(exchange.load_npz, "non-native byte order", name, max_bytes=MB)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_BZIP2) as archive:
      archive.writestr("x.npy", _npy_header((1,)) + bytes(4))
    self.assert_refused(exchange.load_npz, "only stored or deflated",
                        self.write("bz.npz", buf.getvalue()), max_bytes=MB)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
      archive.writestr("notes.txt", b"hello")
    self.assert_refused(exchange.load_npz, "is not an .npy array",
                        self.write("txt.npz", buf.getvalue()), max_bytes=MB)
    huge = b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 30)
    name = self.write("hdr.npz", _raw_zip([("x.npy", huge, 0, len(huge), zlib.crc32(huge))]))
    self.assert_refused(exchange.load_npz, "byte .npy header, over", name, max_bytes=MB)

  def test_expectations_are_checked_before_allocation(self):
    exchange.save_npz(self.root, "exchange/p.npz", {"val|0|pi": np.zeros((8, 4), np.float32),
                                                    "extra": np.zeros(3, np.int8)})
    expect = {"val|0|pi": ((8, 4), np.float32), "extra": ((3,), "int8")}
    self.assertLen(exchange.load_npz(self.root, "exchange/p.npz", max_bytes=MB,
                                     expect=expect), 2)
    cases = [({"val|0|pi": ((8, 4), np.float32)}, r"unexpected array 'extra' \(1 in all\)"),
             ({**expect, "val|1|pi": ((8, 4), np.float32)}, r"no array 'val\|1\|pi'"),
             ({**expect, "val|0|pi": ((8, 5), np.float32)},
              r"val\|0\|pi is float32\[8, 4\], expected float32\[8, 5\]"),
             ({**expect, "val|0|pi": ((8, 4), np.float64)}, "expected float64")]
    for wanted, pattern in cases:
      self.assert_refused(exchange.load_npz, pattern, "exchange/p.npz", max_bytes=MB,
                          expect=wanted)
    seen = []

    def only_floats(name, shape, dtype):
      seen.append((name, shape, dtype.name))
      if dtype.kind != "f":
        raise exchange.BoundaryError(f"{name} is not a float")

    self.assert_refused(exchange.load_npz, "extra is not a float", "exchange/p.npz",
                        max_bytes=MB, expect=only_floats)
    self.assertCountEqual(seen, [("val|0|pi", (8, 4), "float32"), ("extra", (3,), "int8")])


class WriteTest(_Case):

  def test_planted_symlink_at_the_final_name_is_replaced_not_followed(self):
    os.symlink(self.victim, self.path("exchange/inputs.npz"))
    os.symlink(self.victim_dir / "keep.npz", self.path("exchange/state.npz"))
    exchange.save_npz(self.root, "exchange/inputs.npz", {"x": np.ones(3)})
    exchange.write_bytes(self.root, "exchange/state.npz", b"new")
    self.assertFalse(self.path("exchange/inputs.npz").is_symlink())
    self.assertEqual(self.path("exchange/state.npz").read_bytes(), b"new")

  def test_guessable_temporary_names_are_not_used(self):
    for name in (".tmp-inputs.npz", ".inputs.npz.tmp", "inputs.npz.tmp"):
      os.symlink(self.victim, self.path(f"exchange/{name}"))
    exchange.save_npz(self.root, "exchange/inputs.npz", {"x": np.ones(3)})
    leftovers = [n for n in os.listdir(self.path("exchange")) if n.endswith(".tmp")
                 and not self.path(f"exchange/{n}").is_symlink()]
    self.assertEqual(leftovers, [])

  def test_hard_link_at_the_final_name(self):
    outside = self.root.parent / "own_file"
    outside.write_bytes(b"OLD")
    os.link(outside, self.path("exchange/linked.bin"))
    exchange.write_bytes(self.root, "exchange/linked.bin", b"NEW")
    self.assertEqual(outside.read_bytes(), b"OLD")
    self.assertEqual(self.path("exchange/linked.bin").read_bytes(), b"NEW")

  def test_symlinked_directory_is_never_written_into(self):
    os.symlink(self.victim_dir, self.path("exchange/state"))
    self.assert_refused(exchange.save_npz, "exchange/state is not a plain directory",
                        "exchange/state/seed0.npz", {"x": np.ones(1)})
    self.assert_refused(exchange.save_npz, "not a plain directory",
                        "exchange/state/seed0.npz", {"x": np.ones(1)}, parents=True)
    self.assert_refused(exchange.write_bytes, "directory of exchange/none/x is missing",
                        "exchange/none/x", b"")
    self.path("exchange/adir").mkdir()
    self.assert_refused(exchange.write_bytes, r"cannot write exchange/adir \(Is a directory",
                        "exchange/adir", b"x")

  def test_parents_are_created(self):
    exchange.save_npz(self.root, "exchange/ckpt/deep/a.npz", {"x": np.ones(1)}, parents=True)
    self.assertTrue(self.path("exchange/ckpt/deep/a.npz").is_file())

  @absltest.skipIf(os.geteuid() != 0, "chown needs root")
  def test_new_entries_take_the_directory_owner(self):
    os.chown(self.path("exchange"), 12345, 12346)
    exchange.save_npz(self.root, "exchange/sub/a.npz", {"x": np.ones(1)}, parents=True)
    exchange.reset_dir(self.root, "exchange/fresh")
    for name in ("sub", "sub/a.npz", "fresh"):
      info = self.path(f"exchange/{name}").stat()
      self.assertEqual((info.st_uid, info.st_gid), (12345, 12346), name)


class RemoveTest(_Case):

  def plant(self):
    ex = self.path("exchange")
    os.symlink(self.victim_dir, ex / "ckpt")
    os.symlink(self.victim, ex / "file_link")
    (ex / "state").mkdir()
    (ex / "state" / "seed0.npz").write_bytes(b"s")
    os.symlink(self.victim_dir, ex / "state" / "inner")
    os.mkfifo(ex / "fifo")
    (ex / "a" / "b" / "c").mkdir(parents=True)
    (ex / "a" / "b" / "c" / "f").write_bytes(b"f")

  def test_reset_dir_removes_a_planted_tree_without_following(self):
    self.plant()
    exchange.reset_dir(self.root, "exchange", keep=("state",))
    self.assertEqual(os.listdir(self.path("exchange")), ["state"])
    exchange.reset_dir(self.root, "exchange")
    self.assertEqual(os.listdir(self.path("exchange")), [])

  def test_reset_dir_replaces_a_link_or_file(self):
    self.path("exchange").rmdir()
    os.symlink(self.victim_dir, self.path("exchange"))
    exchange.reset_dir(self.root, "exchange")
    self.assertTrue(self.path("exchange").is_dir() and not self.path("exchange").is_symlink())
    self.path("other").write_bytes(b"x")
    exchange.reset_dir(self.root, "other")
    self.assertTrue(self.path("other").is_dir())

  def test_unlink(self):
    self.plant()
    self.assert_refused(exchange.unlink, "ckpt is not a plain directory",
                        "exchange/ckpt/keep.npz")
    for name in ("ckpt", "file_link", "fifo", "a", "state", "none"):
      exchange.unlink(self.root, f"exchange/{name}")
    exchange.unlink(self.root, "nodir/x")
    self.assertEqual(os.listdir(self.path("exchange")), [])

  def test_list_names(self):
    self.plant()
    self.assertEqual(exchange.list_names(self.root, "exchange/missing"), [])
    self.assertIn("fifo", exchange.list_names(self.root, "exchange"))
    self.assert_refused(exchange.list_names, "ckpt is not a plain directory",
                        "exchange/ckpt")
    self.assert_refused(exchange.list_names, "more than 2 entries", "exchange",
                        max_entries=2)

  def test_deep_tree_with_few_descriptors(self):
    deep = self.path("exchange/d")
    for i in range(3 * exchange.MAX_DEPTH):
      deep = deep / ("d" if i % 7 else "e")
      deep.mkdir(parents=True)
      os.symlink(self.victim_dir, deep / "link")
    (deep / "f").write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    exchange.reset_dir(self.root, "exchange")
    self.assertEqual(os.listdir(self.path("exchange")), [])
    self.assertEqual(len(os.listdir("/proc/self/fd")), before)


if __name__ == "__main__":
  absltest.main()
