#!/usr/bin/env python3
"""Write the seed corpora of the fuzz harnesses into test/fuzz/corpus/.

Images from the CRIU 4.2 dumps in test/data/ (pages files as sparse
records, so each seed stays a few hundred bytes) plus synthetic dirs
(parent chains, planted FIFOs and directories); HELLO packets; page-server
request and answer streams as the protocol's sessions run (the GETs
criu-sim's restores send for the lazy ranges of `single`, CLOSE, ...).
Run from the top of the tree: test/fuzz/mkseeds.py. Deterministic.
"""
import os
import struct
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(TOP, 'test', 'data', 'criu-4.2')
OUT = os.path.join(TOP, 'test', 'fuzz', 'corpus')
PG = 4096

# --- protobuf, just enough ---------------------------------------------------

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7f
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field(num, v):
    if isinstance(v, (bytes, bytearray)):
        return varint(num << 3 | 2) + varint(len(v)) + bytes(v)
    return varint(num << 3) + varint(v)

def msg(*fields):
    return b''.join(field(n, v) for n, v in fields if v is not None)

def read_varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << s
        s += 7
        if not c & 0x80:
            return v, i

def decode(b):
    """(field, value) pairs of one message; values of wire type 2 as bytes."""
    i, out = 0, []
    while i < len(b):
        k, i = read_varint(b, i)
        t = k & 7
        if t == 0:
            v, i = read_varint(b, i)
        elif t == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        elif t == 1:
            v, i = b[i:i + 8], i + 8
        elif t == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError('wire type %d' % t)
        out.append((k >> 3, v))
    return out

def records(path):
    b = open(path, 'rb').read()
    i = 8
    while i < len(b):
        n = struct.unpack_from('<I', b, i)[0]
        yield b[i + 4:i + 4 + n]
        i += 4 + n

COMMON, PSTREE, PAGEMAP, MM, INVENTORY = 0x54564319, 0x50273030, 0x56084025, 0x57492820, 0x58313116

def img(magic, *recs):
    head = struct.pack('<I', magic) if magic == INVENTORY else struct.pack('<II', COMMON, magic)
    return head + b''.join(struct.pack('<I', len(r)) + r for r in recs)

# --- fuzz_images framing ------------------------------------------------------

REG, SPARSE, FIFO, DIR, LINK = 0, 1, 2, 3, 4

def rec(name, body=b'', depth=0, kind=REG, length=None):
    if length is None:
        length = len(body)
    return bytes([depth | kind << 2]) + name.encode() + b'\0' + struct.pack('<I', length) + body

def dump_seed(d, skip=(), shm=False):
    """A CRIU dump as records: small files whole, pages files sparse.
    SHM: with the records of its shared memory (memfd, files, fdinfo)."""
    out = b''
    for f in sorted(os.listdir(d)):
        if f in skip or not (f.startswith(('pagemap-', 'mm-', 'pages-')) or
                             f in ('pstree.img', 'inventory.img') or
                             (shm and (f.startswith('fdinfo-') or
                                       f in ('memfd.img', 'files.img')))):
            continue
        p = os.path.join(d, f)
        if f.startswith('pages-'):
            out += rec(f, kind=SPARSE, length=os.path.getsize(p) // PG)
        else:
            out += rec(f, open(p, 'rb').read())
    return out

def lazy_ranges(d, pid):
    """(start, pages) of the PE_LAZY pagemap entries of PID in dump D."""
    out = []
    for n, r in enumerate(records(os.path.join(d, 'pagemap-%d.img' % pid))):
        if n == 0:
            continue
        f = dict(decode(r))
        nr = f.get(5, f.get(2, 0))
        if f.get(4, 4) & 2:
            out.append((f[1], nr))
    return out

def synth_task(pid, vmas, entries, pages_id=1):
    """mm, pagemap and a sparse pages file for PID: VMAS (start, end), ENTRIES (vaddr, nr, flags)."""
    mm = msg(*[(i, 0) for i in range(1, 13)],
             *[(14, msg((1, s), (2, e), (3, 0), (4, 0), (5, 3), (6, 0x22), (7, 0x201), (8, 0)))
               for s, e in vmas])
    pm = [msg((1, pages_id))] + [msg((1, v), (2, n), (4, fl), (5, n)) for v, n, fl in entries]
    present = sum(n for _, n, fl in entries if fl & 4)
    return (img(MM, mm), img(PAGEMAP, *pm), present)

def image_seeds():
    seeds = {}
    single = os.path.join(DATA, 'single')
    fork3 = os.path.join(DATA, 'fork3')
    seeds['single'] = dump_seed(single)
    seeds['fork3'] = dump_seed(fork3)
    seeds['shm-single'] = dump_seed(os.path.join(DATA, 'shm-single'), shm=True)
    seeds['shm-fork2'] = dump_seed(os.path.join(DATA, 'shm-fork2'), shm=True)
    seeds['single-no-pstree'] = dump_seed(single, skip=('pstree.img', 'inventory.img'))
    base = dump_seed(single)
    pid = [f for f in os.listdir(single) if f.startswith('pagemap-')][0][8:-4]
    for f, kind, tag in (('pagemap-%s.img' % pid, FIFO, 'fifo-pagemap'),
                         ('mm-%s.img' % pid, FIFO, 'fifo-mm'),
                         ('pages-1.img', FIFO, 'fifo-pages'),
                         ('pstree.img', FIFO, 'fifo-pstree'),
                         ('inventory.img', FIFO, 'fifo-inventory'),
                         ('pages-1.img', DIR, 'dir-pages'),
                         ('pagemap-%s.img' % pid, LINK, 'link-pagemap')):
        seeds[tag] = base + rec(f, b'\0', kind=kind)
    # A parent chain: half of an 8-page lazy area in the parent, half in the top.
    vm = [(0x40000, 0x48000)]
    p_mm, p_pm, p_n = synth_task(100, vm, [(0x40000, 8, 2 | 4)])
    t_mm, t_pm, t_n = synth_task(100, vm, [(0x40000, 4, 2 | 1), (0x44000, 4, 2 | 4)])
    pstree = img(PSTREE, msg((1, 100), (2, 0), (3, 100), (4, 100)))
    inv = img(INVENTORY, msg((1, 2)))
    chain = (rec('inventory.img', inv) + rec('pstree.img', pstree) + rec('mm-100.img', t_mm) +
             rec('pagemap-100.img', t_pm) + rec('pages-1.img', kind=SPARSE, length=t_n) +
             rec('mm-100.img', p_mm, depth=1) + rec('pagemap-100.img', p_pm, depth=1) +
             rec('pages-1.img', kind=SPARSE, length=p_n, depth=1))
    seeds['parent-chain'] = chain
    seeds['parent-fifo'] = chain + rec('pagemap-100.img', b'', depth=1, kind=FIFO)
    seeds['parent-loop'] = chain + rec('parent', b'\x04', depth=1, kind=LINK)
    seeds['parent-missing'] = chain + rec('parent', b'\x06', kind=LINK)
    # Three generations, the grandparent holding the data.
    g_mm, g_pm, g_n = synth_task(100, vm, [(0x40000, 8, 2 | 4)])
    mid_mm, mid_pm, _ = synth_task(100, vm, [(0x40000, 8, 2 | 1)])
    seeds['grandparent'] = (rec('pstree.img', pstree) + rec('mm-100.img', t_mm) +
                            rec('pagemap-100.img', t_pm) +
                            rec('pages-1.img', kind=SPARSE, length=t_n) +
                            rec('mm-100.img', mid_mm, depth=1) +
                            rec('pagemap-100.img', mid_pm, depth=1) +
                            rec('mm-100.img', g_mm, depth=2) + rec('pagemap-100.img', g_pm, depth=2) +
                            rec('pages-1.img', kind=SPARSE, length=g_n, depth=2))
    # A zombie: in pstree, no memory images.
    seeds['zombie'] = rec('pstree.img', img(PSTREE, msg((1, 100), (2, 0), (3, 100), (4, 100)),
                                        msg((1, 101), (2, 100), (3, 100), (4, 100)))) + \
        rec('mm-100.img', t_mm) + rec('pagemap-100.img', p_pm) + \
        rec('pages-1.img', kind=SPARSE, length=p_n)
    return seeds

# --- fuzz_hello --------------------------------------------------------------

FEATURES = 0x2 | 0x4 | 0x8 | 0x20 | 0x100  # FORK REMAP REMOVE UNMAP THREAD_ID (as hello says)

def hello(version=1, image_id=24772, features=FEATURES, flags=None):
    return msg((1, msg((1, version), (2, image_id), (3, features), (4, flags))))

def hello_seeds():
    menu = dict(uffd=0, pidfd=1, deadpid=2, imgdir=3, emptydir=4, null=5, pipe=6, memfd=8,
                opath=9, sock=10, evfd=11)
    def pkt(fds, payload, split=None):
        head = len(fds) | (8 if split is not None else 0)
        out = bytes([head]) + bytes(menu[f] for f in fds)
        if split is not None:
            out += struct.pack('<H', split)
        return out + payload
    good = ['uffd', 'pidfd', 'imgdir']
    return {
        'hello': pkt(good, hello()),
        'hello-zero-features': pkt(good, hello(features=0)),
        'hello-registered': pkt(good, hello(features=0, flags=1)),
        'hello-version-2': pkt(good, hello(version=2)),
        'hello-no-fds': pkt([], hello()),
        'hello-two-fds': pkt(['uffd', 'pidfd'], hello()),
        'hello-four-fds': pkt(good + ['null'], hello()),
        'hello-swapped': pkt(['pidfd', 'uffd', 'imgdir'], hello()),
        'hello-dead-pid': pkt(['uffd', 'deadpid', 'imgdir'], hello(features=0)),
        'hello-not-a-dir': pkt(['uffd', 'pidfd', 'opath'], hello(features=0)),
        'hello-empty-dir': pkt(['uffd', 'pidfd', 'emptydir'], hello(features=0)),
        'hello-odd-fds': pkt(['memfd', 'evfd', 'sock'], hello()),
        'status': pkt([], msg((2, msg((1, 1))))),
        'status-with-fd': pkt(['pipe'], msg((2, msg((1, 1))))),
        'both': pkt(good, msg((1, msg((1, 1), (2, 1), (3, 0))), (2, msg((1, 1))))),
        'neither': pkt([], b''),
        'garbage': pkt([], b'\xff\xff\xff\xff\x0f'),
        'second-packet': pkt(good, hello(features=0) + hello(features=0),
                             split=len(hello(features=0))),
        'big': pkt([], b'\x0a' + varint(4200) + b'\0' * 4200),
    }

# --- page-server wire ----------------------------------------------------------

ADD, HOLE, OPEN, OPEN2, PARENT, ADD_F, GET, CLOSE, FORCE_CLOSE = 1, 2, 3, 4, 5, 6, 7, 0x1023, 0x1024

def hdr(op, nr=0, vaddr=0, dst=0, flags=0):
    return struct.pack('<IIQQQ', flags << 16 | op, 0, nr, vaddr, dst)

def pagesrv_seeds():
    single = os.path.join(DATA, 'single')
    pid = int([f for f in os.listdir(single) if f.startswith('pagemap-')][0][8:-4])
    lazy = lazy_ranges(single, pid)
    s = {}
    a, n = lazy[0]
    # A restore's session: fault GETs of one page, background GETs of the rest, CLOSE.
    sess = b''.join(hdr(GET, 1, v, pid) for v, _ in lazy[:4])
    sess += b''.join(hdr(GET, min(nr, 16), v, pid) for v, nr in lazy[:4])
    s['session'] = b'\0' + sess + hdr(CLOSE)
    s['session-pieces'] = b'\x05' + sess + hdr(CLOSE)
    s['force-close'] = b'\0' + hdr(GET, 1, a, pid) + hdr(FORCE_CLOSE)
    s['get-huge'] = b'\0' + hdr(GET, 1 << 40, a, pid)
    s['get-dump-form'] = b'\0' + hdr(GET, 1, a, pid << 8 | 1)
    s['get-unaligned'] = b'\0' + hdr(GET, 1, a + 1, pid)
    s['get-zero'] = b'\0' + hdr(GET, 0, a, pid)
    s['get-wrap'] = b'\0' + hdr(GET, 1024, 0xfffffffffffff000, pid)
    s['get-no-task'] = b'\0' + hdr(GET, 1, a, 1)
    s['get-hole'] = b'\0' + hdr(GET, 1, 0x1000, pid)
    s['push-ops'] = b'\0' + hdr(OPEN2, 0, 0, pid << 8 | 1) + hdr(ADD, 1, a, pid << 8 | 1)
    s['after-close'] = b'\0' + hdr(CLOSE) + hdr(GET, 1, a, pid)
    s['half-header'] = b'\0' + hdr(GET, 1, a, pid)[:17]
    s['unknown-op'] = b'\0' + hdr(0x7777, 1, a, pid)
    return s

def remote_seeds():
    s = {}
    def reqs(lst):
        out = bytes([len(lst) - 1])
        for pid, img, nr in lst:
            out += struct.pack('<IQH', pid, img, nr - 1)
        return out
    def answer(pid, img, nr, op=ADD_F, flags=4):
        return hdr(op, nr, img, pid, flags) + bytes((img >> 12) & 0xff for _ in range(nr * PG))
    def in_order(lst):
        # The harness marks odd requests as faults: they are sent, so answered, first.
        return lst[1::2] + lst[0::2]
    r = [(100, 0x40000, 1), (100, 0x41000, 2), (101, 0x80000, 1)]
    full = b''.join(answer(p, i, n) for p, i, n in in_order(r))
    s['answers'] = reqs(r) + b'\0' + full
    s['answers-pieces'] = reqs(r) + b'\x07' + full
    s['short-answer'] = reqs([(100, 0x40000, 4)]) + b'\0' + answer(100, 0x40000, 2)
    s['add-not-add-f'] = reqs([(100, 0x40000, 1)]) + b'\0' + answer(100, 0x40000, 1, op=ADD, flags=0)
    s['no-present-flag'] = reqs([(100, 0x40000, 1)]) + b'\0' + answer(100, 0x40000, 1, flags=2)
    s['wrong-addr'] = reqs([(100, 0x40000, 1)]) + b'\0' + answer(100, 0x41000, 1)
    s['wrong-pid'] = reqs([(100, 0x40000, 1)]) + b'\0' + answer(101, 0x40000, 1)
    s['too-many-pages'] = reqs([(100, 0x40000, 1)]) + b'\0' + hdr(ADD_F, 2, 0x40000, 100, 4)
    s['zero-pages'] = reqs([(100, 0x40000, 1)]) + b'\0' + hdr(ADD_F, 0, 0x40000, 100, 4)
    s['extra-answer'] = reqs([(100, 0x40000, 1)]) + b'\0' + answer(100, 0x40000, 1) * 2
    s['cut-in-data'] = reqs([(100, 0x40000, 2)]) + b'\0' + answer(100, 0x40000, 2)[:32 + 5000]
    s['eight-requests'] = reqs([(7, 0x10000 * i, 1) for i in range(8)]) + b'\x1f' + \
        b''.join(answer(7, 0x10000 * i, 1) for i in in_order(list(range(8))))
    return s

def main():
    sets = {'images': image_seeds(), 'hello': hello_seeds(), 'pagesrv': pagesrv_seeds(),
            'remote': remote_seeds()}
    for h, seeds in sets.items():
        d = os.path.join(OUT, h)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, 'seed-' + name), 'wb') as f:
                f.write(data)
        print('%s: %d seeds' % (h, len(seeds)), file=sys.stderr)

if __name__ == '__main__':
    main()
