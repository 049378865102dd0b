"""SQL normalisation/fingerprints (autoperf.sql) and ``kind: db`` YAML targets over sqlite3."""
from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
import types

import pytest

from autoperf import sql, targets, testing


@pytest.fixture(autouse=True)
def _default_length():
    sql.set_max_length(sql.DEFAULT_MAX_LENGTH)
    yield
    sql.set_max_length(sql.DEFAULT_MAX_LENGTH)


class TestLiterals:
    def test_strings_and_numbers_become_placeholders(self):
        """String and numeric literals are replaced by ``?``."""
        d = sql.describe("SELECT * FROM t WHERE a = 42 AND b = 'bob''s' AND c > 3.5e2 AND d = .5")
        assert d["statement"] == "SELECT * FROM t WHERE a = ? AND b = ? AND c > ? AND d = ?"

    def test_escape_strings_and_prefixed_literals(self):
        """E'' (backslash escapes), B'', X'', N'' and U&'' literals are replaced whole."""
        d = sql.describe(r"SELECT E'it\'s secret', B'0101', X'ff', N'nat', U&'d\0061t', 0x1F")
        assert d["statement"] == "SELECT ?, ?, ?, ?, ?, ?"
        assert "secret" not in d["statement"]

    def test_dollar_quoted_strings(self):
        """``$$...$$`` and ``$tag$...$tag$`` bodies are replaced, even with quotes inside."""
        d = sql.describe("SELECT $$it's $1 'x'$$, $fn$ body $$ inner $$ $fn$ FROM t WHERE id = $2")
        assert d["statement"] == "SELECT ?, ? FROM t WHERE id = $2"

    def test_unterminated_string_never_leaks(self):
        """A string without its closing quote is still treated as a literal to the end."""
        d = sql.describe("UPDATE t SET note = 'password: hunter2")
        assert "hunter2" not in d["statement"]
        assert d["statement"] == "UPDATE t SET note = ?"

    def test_placeholders_are_kept(self):
        """``$N``, ``%s``, ``%(name)s``, ``:name`` and ``?`` placeholders stay as written."""
        d = sql.describe("SELECT $1, %s, %(name)s, :name, ? FROM t WHERE b = $12")
        assert d["statement"] == "SELECT $1, %s, %(name)s, :name, ? FROM t WHERE b = $12"

    def test_identifiers_with_digits_are_not_numbers(self):
        """Digits inside identifiers and quoted identifiers are kept."""
        d = sql.describe('SELECT t1.col2, "Weird 3" FROM table1 t1')
        assert d["statement"] == 'SELECT t1.col2, "Weird 3" FROM table1 t1'

    def test_signs_belong_to_literals(self):
        """A unary minus goes with the number, a subtraction stays."""
        assert sql.describe("SELECT a - 5, -4 FROM t WHERE x = -2")["statement"] == "SELECT a - ?, ? FROM t WHERE x = ?"


class TestShape:
    def test_comments_and_whitespace(self):
        """Line, block and nested block comments go; whitespace collapses to single spaces."""
        d = sql.describe("/* app=bot /* nested */ */ SELECT  a ,\n\t b -- trailing\n FROM   t")
        assert d["statement"] == "SELECT a, b FROM t"

    def test_in_lists_collapse(self):
        """``IN`` lists of literals or placeholders collapse to ``IN (?)``."""
        assert sql.describe("SELECT 1 FROM t WHERE a IN (1, 2, 3)")["statement"] == "SELECT ? FROM t WHERE a IN (?)"
        assert sql.describe("SELECT 1 FROM t WHERE a NOT IN ($1,$2::int)")["statement"] == "SELECT ? FROM t WHERE a NOT IN (?)"
        assert (sql.describe("SELECT 1 FROM t WHERE a IN (1,2)")["fingerprint"]
                == sql.describe("SELECT 1 FROM t WHERE a IN (7, 8, 9, 10)")["fingerprint"])

    def test_values_tuples_collapse(self):
        """Multi-row ``VALUES`` lists of one shape collapse to their first tuple."""
        d = sql.describe("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING")
        assert d["statement"] == "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        one = sql.describe("insert into t values (1, 'a')")
        many = sql.describe("insert into t values (1,'a'),(2,'b'),(3,'c')")
        assert one["fingerprint"] == many["fingerprint"] and many["statement"] == "insert into t values (?, ?)"

    def test_array_literals_collapse(self):
        """``ARRAY[1, 2, 3]`` collapses to ``ARRAY[?]``."""
        assert sql.describe("SELECT ARRAY[1, 2, 3]")["statement"] == "SELECT ARRAY[?]"

    def test_fingerprint_ignores_values_and_formatting(self):
        """Same shape, different values/whitespace/comments: same 16-hex fingerprint."""
        a = sql.describe("SELECT * FROM players WHERE id = 1 AND name = 'x'")
        b = sql.describe("SELECT *\n  FROM players /* c */ WHERE id = 99999 AND name = 'other'")
        c = sql.describe("SELECT * FROM players WHERE id = 1 AND nick = 'x'")
        assert a["fingerprint"] == b["fingerprint"] != c["fingerprint"]
        assert len(a["fingerprint"]) == 16 and int(a["fingerprint"], 16) >= 0

    def test_fingerprint_is_of_text_before_truncation(self):
        """Two long statements differing after the cut keep different fingerprints."""
        head = "SELECT " + ", ".join(f"col{i}" for i in range(100))
        a, b = sql.describe(head + " FROM a", 40), sql.describe(head + " FROM b", 40)
        assert a["statement"] == b["statement"] and len(a["statement"]) == 40 and a["statement"].endswith("...")
        assert a["fingerprint"] != b["fingerprint"]

    def test_set_max_length(self):
        """``set_max_length`` changes the default cut of every later call."""
        text = "SELECT " + ", ".join(f"c{i}" for i in range(200)) + " FROM t"
        assert len(sql.describe(text)["statement"]) == 200
        sql.set_max_length(50)
        assert len(sql.describe(text)["statement"]) == 50
        assert sql.describe(text, 80)["statement"].startswith("SELECT c0, c1")


class TestOperation:
    @pytest.mark.parametrize("text, op", [
        ("select 1", "SELECT"), ("  INSERT INTO t VALUES (1)", "INSERT"), ("update t set a=1", "UPDATE"),
        ("DELETE FROM t", "DELETE"), ("BEGIN", "BEGIN"), ("-- c\nCOMMIT", "COMMIT"),
        ("WITH x AS (SELECT 1) DELETE FROM t USING x", "DELETE"),
        ("with recursive r(n) as (select 1 union all select n+1 from r) select * from r", "SELECT"),
        ("WITH a AS (SELECT 1), b AS (SELECT 2) INSERT INTO t SELECT * FROM a", "INSERT"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT"), ("", ""),
    ])
    def test_operation(self, text, op):
        """The operation is the statement's verb, the main one after CTEs for WITH."""
        assert sql.describe(text)["operation"] == op


class TestCache:
    def test_repeated_calls_hit_the_cache_and_return_copies(self):
        """A repeated statement is served from the cache; callers cannot corrupt it."""
        sql.clear_cache()
        text = "SELECT * FROM cache_probe WHERE id = 5"
        first = sql.describe(text)
        first["statement"] = "tampered"
        assert text in sql._cache
        assert sql.describe(text)["statement"] == "SELECT * FROM cache_probe WHERE id = ?"

    def test_cache_is_bounded(self):
        """The cache never holds more than CACHE_SIZE statements."""
        sql.clear_cache()
        for i in range(sql.CACHE_SIZE + 50):
            sql.describe(f"SELECT col_{i} FROM t")
        assert len(sql._cache) <= sql.CACHE_SIZE

    def test_only_three_keys(self):
        """describe returns statement, fingerprint and operation, nothing else."""
        assert set(sql.describe("SELECT 1")) == {"statement", "fingerprint", "operation"}


# -- kind: db targets over sqlite3 ---------------------------------------------------------------
ADAPTER_SRC = '''
import sqlite3


class DatabaseAdapter:
    """A home-made adapter, the way small bots write them."""

    def __init__(self):
        self.conn = sqlite3.connect(":memory:")
        self.conn.execute("CREATE TABLE players (id INTEGER PRIMARY KEY, name TEXT, mmr INTEGER)")

    def execute_query(self, query, params=()):
        cur = self.conn.execute(query, params)
        rows = cur.fetchall()
        self.conn.commit()
        return rows
'''


@pytest.fixture
def adapter_module(tmp_path, autoperf_pipeline):
    from autoperf import pipeline
    from autoperf.metrics.retention import RetainSettings
    pipeline.configure_metrics(RetainSettings(all=True))    # the tests read each span (an earlier install() may
    name = "autoperf_sqlite_adapter_mod"                    # have left the pipeline on the default)
    mod = types.ModuleType(name)
    exec(compile(textwrap.dedent(ADAPTER_SRC), f"<{name}>", "exec"), mod.__dict__)
    sys.modules[name] = mod
    cfg_path = tmp_path / "autoperf.yaml"
    cfg_path.write_text(textwrap.dedent(f"""\
        targets:
          - target: {name}:DatabaseAdapter.execute_query
            kind: db
            name: db.adapter
            statement_arg: query
    """))
    from autoperf.config import load_config
    specs = load_config(cfg_path).targets
    assert len(specs) == 1 and specs[0].kind == "db"
    assert targets.patch_module(mod, specs) == 1
    yield mod
    targets.unpatch_all()
    sys.modules.pop(name, None)


def test_sqlite_adapter_db_target_records_statement_never_params(adapter_module):
    """A ``kind: db`` YAML target on a sqlite3 adapter records normalised SQL, fingerprint, never parameters."""
    db = adapter_module.DatabaseAdapter()
    with testing.capture_records() as records:
        db.execute_query("INSERT INTO players (name, mmr) VALUES (?, ?)", ("sekrit-player-77", 9876543))
        db.execute_query("INSERT INTO players (name, mmr) VALUES ('inline-sekrit', 8765431)")
        rows = db.execute_query("SELECT name, mmr FROM players WHERE mmr > ? ORDER BY mmr", (1000,))
    assert [r[0] for r in rows] == ["inline-sekrit", "sekrit-player-77"]
    spans = [r for r in records if r.get("type") == "span" and r["name"] == "db.adapter"]
    assert len(spans) == 3 and all(s["kind"] == "db" for s in spans)
    ins_param, ins_inline, select = (s["attrs"] for s in spans)
    assert ins_param["statement"] == "INSERT INTO players (name, mmr) VALUES (?, ?)"
    assert ins_inline["statement"] == ins_param["statement"]
    assert ins_inline["fingerprint"] == ins_param["fingerprint"]
    assert select["operation"] == "SELECT" and select["fingerprint"] != ins_param["fingerprint"]
    assert select["statement"] == "SELECT name, mmr FROM players WHERE mmr > ? ORDER BY mmr"
    dumped = json.dumps(records)
    for secret in ("sekrit", "9876543", "8765431", "inline"):
        assert secret not in dumped


# -- dialects (issue 19, item 8) -------------------------------------------------------------
LEAKS = ['SELECT * FROM t WHERE a = "DQSECRET"',                 # SQLite / MySQL: a string
         "SELECT * FROM t WHERE a = 'ab\\'cSECRET' AND b = 1",     # MySQL: an escaped quote
         "SELECT 1 # SECRET comment\nFROM t",                     # MySQL: a comment
         "UPDATE t SET a = 'x\\' , 'SECRET' WHERE id = 2"]        # PostgreSQL: two strings


@pytest.mark.parametrize("text", LEAKS)
@pytest.mark.parametrize("dialect", [None, "mysql", "sqlite", "postgresql"])
def test_no_dialect_leaks_a_literal_it_could_mean(text, dialect):
    """Each dialect removes what it reads as a literal; an unknown one removes what any could."""
    statement = sql.describe(text, dialect=dialect)["statement"]
    readings = {"postgresql": LEAKS[3:], "mysql": LEAKS[:3], "sqlite": LEAKS[:1], None: LEAKS}[dialect]
    if text in readings:
        assert "SECRET" not in statement, statement


def test_mysql_keeps_the_statement_shape():
    """MySQL strings with escapes and a trailing comment still leave the rest of the statement."""
    assert sql.describe("SELECT * FROM t WHERE a = 'ab\\'c' AND b = \"x\" # note", dialect="mysql")["statement"] == \
        "SELECT * FROM t WHERE a = ? AND b = ?"


def test_kind_db_target_over_sqlite3_leaks_no_literal(tmp_path):
    """A ``kind: db`` target over sqlite3 (through ``autoperf run``) records none of these literals."""
    from tests.faults import Program
    prog = Program(tmp_path, """
        import sqlite3
        def query(conn, sql):
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.Error:
                return None
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (a TEXT, b INT)")
        for text in %r:
            query(conn, text)
    """ % (LEAKS,), "targets:\n  - target: '__main__:query'\n    kind: db\n    statement_arg: sql\n"
       "retain: {all: true}\n")     # every span written: the statements in the spans and in the metrics
    done = prog.run()
    assert done.returncode == 0, done.stderr
    spans = [r for r in prog.records() if r["type"] == "span" and r["kind"] == "db"]
    assert len(spans) == 4
    for path in (tmp_path / "logs").iterdir():      # performance_ and metrics_ (db metrics carry the statement)
        assert "SECRET" not in path.read_text(), path.name
