"""Reading the statements that change which functions exist or what they are called: DROP
FUNCTION / ROUTINE, ALTER FUNCTION … RENAME TO / SET SCHEMA, and the drops that may take
functions or views with them (``… CASCADE``, ``DROP OWNED``).

Which function a name means is Postgres's business (search_path, overloads, IF EXISTS): this
module only says what to ask it. ``FunctionRef.lookup`` is text for ``to_regprocedure`` (or
``to_regproc`` when the statement gives no argument list), resolved in the client's session.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast
from pglast.enums import DropBehavior, ObjectType, TransactionStmtKind
from pglast.stream import RawStream

from planner.install import quote_ident

DROP = "DROP"
RENAME = "RENAME"
SET_SCHEMA = "SET SCHEMA"

_FUNCTIONS = (ObjectType.OBJECT_FUNCTION, ObjectType.OBJECT_ROUTINE)
_OPENS = (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START)
_ENDS = (TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK)


@dataclass(frozen=True)
class FunctionRef:
    """One function a statement names."""

    name: str  # unqualified: model functions are matched by name first, then resolved
    lookup: str  # '"s"."f"(real[])' for to_regprocedure, or '"f"' for to_regproc
    with_args: bool


@dataclass(frozen=True)
class FunctionChange:
    action: str  # DROP | RENAME | SET SCHEMA
    targets: tuple[FunctionRef, ...]
    cascade: bool = False
    new_name: str | None = None
    new_schema: str | None = None


def read_function_change(stmt: ast.Node) -> FunctionChange | None:
    """The functions a DROP / ALTER … RENAME TO / ALTER … SET SCHEMA statement names, or None."""
    if isinstance(stmt, ast.DropStmt) and stmt.removeType in _FUNCTIONS:
        cascade = stmt.behavior == DropBehavior.DROP_CASCADE
        return FunctionChange(DROP, tuple(_ref(o) for o in stmt.objects), cascade=cascade)
    if isinstance(stmt, ast.RenameStmt) and stmt.renameType in _FUNCTIONS:
        return FunctionChange(RENAME, (_ref(stmt.object),), new_name=stmt.newname)
    if isinstance(stmt, ast.AlterObjectSchemaStmt) and stmt.objectType in _FUNCTIONS:
        return FunctionChange(SET_SCHEMA, (_ref(stmt.object),), new_schema=stmt.newschema)
    return None


def drops_dependents(stmt: ast.Node) -> bool:
    """``DROP … CASCADE`` of anything, or ``DROP OWNED``: model functions or views over them may
    go with it, though the statement names neither."""
    if isinstance(stmt, ast.DropOwnedStmt):
        return True
    return isinstance(stmt, ast.DropStmt) and stmt.behavior == DropBehavior.DROP_CASCADE


def leaves_block_open(statements: list, in_block: bool) -> bool:
    """Whether what these statements did is still undecided once they ran: a transaction block
    left open (a later COMMIT or ROLLBACK, which SieveDB does not see, decides) or a prepared
    transaction. A block opened and closed within them is decided when they end."""
    for stmt in statements:
        if not isinstance(stmt, ast.TransactionStmt):
            continue
        if stmt.kind == TransactionStmtKind.TRANS_STMT_PREPARE:
            return True
        if stmt.kind in _OPENS:
            in_block = True
        elif stmt.kind in _ENDS:
            in_block = bool(stmt.chain)  # AND CHAIN starts the next block at once
    return in_block


def _ref(obj: ast.ObjectWithArgs) -> FunctionRef:
    names = [part.sval for part in obj.objname]
    qualified = ".".join(quote_ident(n) for n in names)
    if obj.args_unspecified:
        return FunctionRef(names[-1], qualified, with_args=False)
    args = ", ".join(RawStream()(arg) for arg in obj.objargs or ())
    return FunctionRef(names[-1], f"{qualified}({args})", with_args=True)
