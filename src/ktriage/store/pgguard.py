"""What a PostgreSQL role could reach beyond reading its tables.

A READ ONLY transaction stops writes to the database, not a superuser's
``COPY … TO '/file'`` or ``TO PROGRAM`` (measured: both ran, as the server's
OS user, through the UI's read-only connection), nor ``pg_read_file``. Those
need superuser, one of the server-file roles, or an explicit EXECUTE grant; a
role with none of them cannot run them, so the UI's SQL box refuses such a role.
"""

from __future__ import annotations

from typing import Any

SERVER_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
# Functions that reach the server's files or other connections (dblink: statements outside our transaction).
SERVER_FILE_FUNCTIONS = ("pg_read_file(text)", "pg_read_file(text, bigint, bigint)", "pg_read_binary_file(text)",
                         "pg_ls_dir(text)", "pg_stat_file(text)", "lo_import(text)", "lo_export(oid, text)",
                         "dblink_connect_u(text)", "dblink_exec(text, text)", "dblink(text, text)")

_ROLE = "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
_MEMBER_OF = "SELECT r FROM unnest(%s::text[]) AS r WHERE pg_has_role(current_user, r, 'MEMBER')"
_MAY_CALL = ("SELECT f FROM unnest(%s::text[]) AS f "
             "WHERE coalesce(has_function_privilege(current_user, to_regprocedure(f), 'EXECUTE'), false)")


def server_reach(conn: Any) -> list[str]:
    """Why conn's role could touch the server's files or act outside its transaction; empty if it cannot."""
    user, superuser = conn.execute(_ROLE).fetchone()
    if superuser:
        return [f"role {user} is a superuser"]
    reasons = [f"role {user} is a member of {r}" for (r,) in conn.execute(_MEMBER_OF, (list(SERVER_FILE_ROLES),))]
    reasons += [f"role {user} may call {f}" for (f,) in conn.execute(_MAY_CALL, (list(SERVER_FILE_FUNCTIONS),))]
    return reasons
