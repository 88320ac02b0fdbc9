"""Port a user's YOLOv5 checkout (upstream v6.0 to v7.0, possibly modified) to Cambricon MLU, in place.

    python tools/porting/port_yolov5.py PATH [--modernize] [--check | --revert]

All or nothing: every change is planned in memory first; if one required change finds no place,
the tool prints one line per such place and exits 2 without writing anything. Otherwise it writes
the changed files, the files the port adds (utils/mlu_port.py, utils_mlu/), a copy of each original
under PATH/.mlu_port/ and PATH/yolov5_mlu.patch, the unified diff from the originals to the port.
A second run finds every change in place and writes nothing. `--revert` restores the originals,
refusing files that were changed after the port.
"""
import argparse
import difflib
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edits import EDITS  # noqa: E402
from textedit import ALREADY, APPLIED, MISSING, NOT_NEEDED, find_line, insert_lines, join, split  # noqa: E402

REPO = HERE.parents[1]
STATE_DIR = '.mlu_port'
PATCH_NAME = 'yolov5_mlu.patch'
IMPORT_LINE = 'from utils import mlu_port'
RECOGNISED = ('train.py', 'val.py', 'models/yolo.py', 'utils/torch_utils.py', 'utils/general.py')
SKIP_DIRS = {'.git', STATE_DIR, 'runs', 'venv', '.venv', 'env', '__pycache__', 'utils_mlu', 'datasets'}
UTILS_MLU_INIT = ('"""MetricCollector of the YOLOv5 MLU porting tool (BENCHMARK_LOG benchmark records); '
                  'added by apply_patch.sh."""\n')


class Refusal(Exception):
    """The tree cannot be ported as asked; the message says why and what to do."""


class AlreadyReady(Exception):
    """The path is this project's own trainer: nothing to port."""


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def read(path):
    return path.read_text(encoding='utf-8')


def runtime_files(modernize_pkg):
    files = {'utils/mlu_port.py': read(HERE / 'runtime' / 'mlu_port.py'),
             'utils_mlu/__init__.py': UTILS_MLU_INIT,
             'utils_mlu/metric.py': read(REPO / 'utils_mlu' / 'metric.py'),
             'utils_mlu/configs.json': read(REPO / 'utils_mlu' / 'configs.json')}
    if modernize_pkg:
        files['utils/pkg_compat.py'] = read(HERE / 'runtime' / 'pkg_compat.py')
    return files


def recognise(root):
    if not root.is_dir():
        raise Refusal(f'{root}: no such directory; give the path of your YOLOv5 checkout')
    if (root / 'utils' / 'device' / 'devices.py').exists() and (root / 'utils' / 'training' / 'trainer.py').exists():
        raise AlreadyReady(f'{root} is this project\'s trainer, which is already MLU-ready: run '
                           f'`python train.py --device mlu` there; nothing to port')
    missing = [f for f in RECOGNISED if not (root / f).is_file()]
    if missing:
        raise Refusal(f'{root} does not look like a YOLOv5 checkout (v6.0 to v7.0): missing '
                      f'{", ".join(missing)}; give the folder that holds train.py')
    train = read(root / 'train.py')
    if 'def train(' not in train or 'def parse_opt(' not in train:
        raise Refusal(f'{root}/train.py has no train() and parse_opt(): not a YOLOv5 v6.0-v7.0 train.py')


def python_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith('.'))
        for name in sorted(filenames):
            if name.endswith('.py'):
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if rel not in ('utils/mlu_port.py', 'utils/pkg_compat.py'):
                    yield rel


def add_import(text):
    """`from utils import mlu_port` before the file's first top-level `from utils` import
    (or after its `import torch`); None if neither exists."""
    if any(line.startswith(IMPORT_LINE) for line in split(text)):
        return text
    lines = split(text)
    i = find_line(lines, r"^from utils[. ]")
    if i is None:
        j = find_line(lines, r"^import torch\s*$")
        if j is None:
            return None
        i = j + 1
    insert_lines(lines, i, '', [IMPORT_LINE])
    return join(lines)


class Plan:
    def __init__(self, root, modernize, manifest):
        self.root, self.modernize, self.manifest = root, modernize, manifest
        self.current, self.new = {}, {}  # rel -> text (None: absent)
        self.report = []  # (status, rel, what, detail)
        self.missing = []

    def text(self, rel):
        if rel not in self.new:
            p = self.root / rel
            self.current[rel] = read(p) if p.is_file() else None
            self.new[rel] = self.current[rel]
        return self.new[rel]

    def build(self):
        ctx = {}
        for edit in EDITS:
            if edit.modernize and not self.modernize:
                continue
            files = list(python_files(self.root)) if edit.files == ['**/*.py'] else edit.files
            results = []
            for rel in files:
                text = self.text(rel)
                if text is None:
                    continue
                out = edit.fn(text, ctx)
                self.new[rel] = out.text
                results.append((rel, out))
            self._record(edit, results)
        for rel in list(self.new):
            text = self.new[rel]
            if text is not None and text != self.current[rel] and 'mlu_port.' in text:
                with_import = add_import(text)
                if with_import is None:
                    self.missing.append(f'{rel}: no top-level `from utils ...` or `import torch` line to '
                                        f'put `{IMPORT_LINE}` after')
                else:
                    self.new[rel] = with_import
        self._runtime(ctx.get('pkg_compat', False))
        for rel in self.changed():  # a change must never leave a file that Python cannot read
            if rel.endswith('.py') and self.new[rel] is not None:
                try:
                    compile(self.new[rel], rel, 'exec')
                except SyntaxError as e:
                    self.missing.append(f'{rel}:{e.lineno}: the port would not be valid Python here '
                                        f'({e.msg}); port this file by hand')

    def _record(self, edit, results):
        if not results:
            if edit.required:
                self.missing.append(f'{" or ".join(edit.files)}: file not found ({edit.what})')
            return
        found = [r for r in results if r[1].status != MISSING]
        for rel, out in results:
            if out.status == MISSING and (found and edit.group or not edit.required):
                self.report.append(('skipped', rel, edit.what, out.detail or 'not found'))
            elif out.status == MISSING:
                self.missing.append(f'{rel}: {out.detail} ({edit.what})')
            elif not (edit.files == ['**/*.py'] and out.status == NOT_NEEDED):
                self.report.append((out.status, rel, edit.what, out.detail))

    def _runtime(self, pkg_compat):
        created = {rel for rel, entry in self.manifest.get('files', {}).items() if entry['original'] is None}
        for rel, content in runtime_files(pkg_compat).items():
            existing = self.text(rel)
            if existing == content:
                self.report.append((ALREADY, rel, 'support file of the port', ''))
            elif existing is None or rel in created:
                self.new[rel] = content
                self.report.append((APPLIED, rel, 'support file of the port',
                                    'added' if existing is None else "updated to this tool's version"))
            else:
                self.missing.append(f'{rel}: exists and was not written by this tool; move it away first')

    def changed(self):
        return sorted(rel for rel in self.new if self.new[rel] != self.current[rel])


def unified(rel, old, new):
    a = [] if old is None else old.splitlines(keepends=True)
    b = [] if new is None else new.splitlines(keepends=True)
    for lines in (a, b):
        if lines and not lines[-1].endswith('\n'):
            lines[-1] += '\n\\ No newline at end of file\n'
    return ''.join(difflib.unified_diff(a, b, '/dev/null' if old is None else f'a/{rel}',
                                        '/dev/null' if new is None else f'b/{rel}'))


def load_manifest(root):
    p = root / STATE_DIR / 'manifest.json'
    return json.loads(read(p)) if p.is_file() else {}


def write_atomic(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.mlu_port_tmp')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)


def original_of(root, rel, entry):
    if entry['original'] is None:
        return None
    return read(root / STATE_DIR / 'original' / rel)


def port(root, modernize, check):
    manifest = load_manifest(root)
    plan = Plan(root, modernize, manifest)
    plan.build()
    for status, rel, what, detail in plan.report:
        print(f'  {status:<11} {rel}: {what}' + (f' ({detail})' if detail else ''))
    if plan.missing:
        print(f'\nCannot port {root}: {len(plan.missing)} change(s) found no place. Nothing was changed. '
              f'Port these by hand (docs/porting.md of the porting tool describes each change):')
        for line in plan.missing:
            print(f'  missing     {line}')
        return 2
    changed = plan.changed()
    if check:
        sys.stdout.write(''.join(unified(rel, plan.current[rel], plan.new[rel]) for rel in changed))
        print(f'\n--check: {len(changed)} file(s) would change; nothing was written.')
        return 0
    if not changed:
        print(f'\n{root} is already ported; nothing changed.')
        return 0
    files = manifest.setdefault('files', {})
    for rel in changed:  # back up each original once, before the first change
        if rel not in files:
            old = plan.current[rel]
            if old is not None:
                write_atomic(root / STATE_DIR / 'original' / rel, old)
            files[rel] = {'original': None if old is None else sha(old)}
    for rel in changed:
        write_atomic(root / rel, plan.new[rel])
        files[rel]['ported'] = sha(plan.new[rel])
    manifest['modernize'] = bool(manifest.get('modernize')) or modernize
    write_atomic(root / STATE_DIR / 'manifest.json', json.dumps(manifest, indent=1, sort_keys=True) + '\n')
    patch = ''.join(unified(rel, original_of(root, rel, files[rel]), read(root / rel)) for rel in sorted(files))
    write_atomic(root / PATCH_NAME, patch)
    print(f'\nPorted {root}: {len(changed)} file(s) changed; review {root / PATCH_NAME}; '
          f'undo with: bash apply_patch.sh {root} --revert')
    return 0


def revert(root):
    manifest = load_manifest(root)
    if not manifest.get('files'):
        raise Refusal(f'{root} has no {STATE_DIR}/manifest.json: it was not ported by this tool, '
                      f'nothing to revert')
    files = manifest['files']
    changed_since = []
    for rel, entry in sorted(files.items()):
        p = root / rel
        now = sha(read(p)) if p.is_file() else None
        if now != entry.get('ported'):
            changed_since.append(rel)
    if changed_since:
        print(f'Cannot revert {root}: changed after the port (your edits would be lost): '
              f'{", ".join(changed_since)}. Nothing was changed. Revert those by hand with '
              f'`patch -R -p1 < {PATCH_NAME}` or restore the ported versions first.')
        return 2
    for rel, entry in sorted(files.items()):
        p = root / rel
        if entry['original'] is None:
            p.unlink()
            print(f'  removed     {rel}')
        else:
            write_atomic(p, original_of(root, rel, entry))
            print(f'  restored    {rel}')
    for rel in sorted({str(Path(r).parent) for r, e in files.items() if e['original'] is None}, reverse=True):
        d = root / rel
        if rel != '.' and d.is_dir() and not any(p for p in d.iterdir() if p.name != '__pycache__'):
            for cache in d.glob('__pycache__'):
                for f in cache.iterdir():
                    f.unlink()
                cache.rmdir()
            d.rmdir()
    (root / PATCH_NAME).unlink(missing_ok=True)
    state = root / STATE_DIR
    for p in sorted(state.rglob('*'), key=lambda p: len(p.parts), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    state.rmdir()
    print(f'\nReverted {root}: {len(files)} file(s) back to their state before the port.')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='apply_patch.sh', description=__doc__.split('\n\n')[0])
    parser.add_argument('path', help='your YOLOv5 checkout (the folder with train.py)')
    parser.add_argument('--modernize', action='store_true',
                        help='also the fixes an old tree needs on a current Python/numpy/torch stack')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--check', action='store_true', help='print the diff, change nothing')
    mode.add_argument('--revert', action='store_true', help='undo a previous port')
    args = parser.parse_args(argv)
    root = Path(args.path).resolve()
    try:
        if args.revert:
            if args.modernize:
                raise Refusal('--revert undoes the whole port; it takes no --modernize')
            return revert(root)
        recognise(root)
        return port(root, args.modernize, args.check)
    except AlreadyReady as e:
        print(e)
        return 0
    except Refusal as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f'ERROR: {e}; nothing further was changed', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
