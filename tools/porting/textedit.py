"""Line-level rewriting helpers for the porting edits: find code by its shape, change it, mark it.

Every line the port adds or changes carries the marker comment `# [mlu-port]`, so a second run sees
what is already done, and a reader of the ported tree sees what came from the port.
"""
import re

MARK = '[mlu-port]'
APPLIED, ALREADY, NOT_NEEDED, MISSING = 'applied', 'already', 'not needed', 'missing'


class Outcome:
    def __init__(self, status, text, detail=''):
        self.status, self.text, self.detail = status, text, detail


def mark(line):
    """`line` (no newline) with the port's marker appended as, or inside, its trailing comment."""
    if MARK in line or line.rstrip().endswith('\\'):
        return line  # a comment after a backslash continuation would break the statement
    stripped = line.rstrip()
    if re.search(r'\s#\s', stripped) and stripped.count("'") % 2 == 0 and stripped.count('"') % 2 == 0:
        return f'{stripped} {MARK}'
    return f'{stripped}  # {MARK}'


def indent_of(line):
    return line[:len(line) - len(line.lstrip())]


def split(text):
    return text.split('\n')


def join(lines):
    return '\n'.join(lines)


def sub_lines(text, pattern, repl, done=None, missing='', count_all=True):
    """Apply `pattern` -> `repl` on each line; changed lines are marked.

    `done` (a regex) found anywhere means the edit was made before. No match: MISSING.
    """
    if done and re.search(done, text, re.M):
        return Outcome(ALREADY, text)
    lines, n = split(text), 0
    for i, line in enumerate(lines):
        new, k = re.subn(pattern, repl, line)
        if k:
            lines[i] = mark(new)
            n += 1
            if not count_all:
                break
    if not n:
        return Outcome(MISSING, text, missing)
    return Outcome(APPLIED, join(lines), f'{n} line(s)')


def find_line(lines, pattern, start=0, stop=None):
    rx = re.compile(pattern)
    for i in range(start, len(lines) if stop is None else stop):
        if rx.search(lines[i]):
            return i
    return None


def insert_lines(lines, index, indent, new_lines):
    """Insert marked lines at `index` with `indent`."""
    lines[index:index] = [mark(indent + s) for s in new_lines]


def statement_end(lines, start):
    """Index of the last line of the statement beginning at `start` (balanced brackets)."""
    depth = 0
    for i in range(start, len(lines)):
        code = re.sub(r"'[^']*'|\"[^\"]*\"", '', lines[i].split(' #')[0])
        depth += sum(code.count(c) for c in '([{') - sum(code.count(c) for c in ')]}')
        if depth <= 0 and not lines[i].rstrip().endswith('\\'):
            return i
    return len(lines) - 1


def block_end(lines, header):
    """Index just past the indented block under the line `header` (a `for`, `if`, `def` ...)."""
    base = len(indent_of(lines[header]))
    i = statement_end(lines, header) + 1
    while i < len(lines):
        if lines[i].strip() and len(indent_of(lines[i])) <= base:
            break
        i += 1
    while i > header + 1 and not lines[i - 1].strip():
        i -= 1
    return i


def body_indent(lines, header):
    """Indentation of the first statement under `header`."""
    for j in range(statement_end(lines, header) + 1, len(lines)):
        if lines[j].strip() and not lines[j].lstrip().startswith('#'):
            return indent_of(lines[j])
    return indent_of(lines[header]) + '    '
