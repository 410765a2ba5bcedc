"""Functions no agent may call through Bastion, whatever the policy says.

A policy reasons about tables and columns. These functions act outside that model: they read or
write files on the database server, run SQL handed to them as text (so they read tables the
policy never sees), change the session or the server, hold locks or connections, or write while
looking like a read (`nextval`). Refusing them here, on the parsed tree, keeps that true even for
a policy that allows everything.

Names are matched after normalization: lower-cased (PostgreSQL folds unquoted names; a quoted
`"PG_SLEEP"` is a different, user-made function, but refusing it too costs nothing), without the
schema (`pg_catalog.pg_sleep` is `pg_sleep`); the analyzer decodes `U&"..."` identifiers before it
gets here. Patterns are shell-style globs (`pg_ls_*`).

This list is the first lock, not the only one: a user-defined function, a view, a rule or an
operator can hide any of these behind another name. Reads therefore run in a READ ONLY
transaction (and SQLite under an authorizer), which stops whatever writes slip past the analyzer.
"""

from __future__ import annotations

import re
from fnmatch import translate
from functools import lru_cache

import sqlglot.expressions as exp

# (why it is refused, glob patterns); the first matching rule gives the reason
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "reads or lists files on the database server",
        (
            "pg_read_file",
            "pg_read_file_old",
            "pg_read_binary_file",
            "pg_ls_*",
            "pg_stat_file",
            "pg_logdir_ls",
            "pg_current_logfile",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_show_all_file_settings",
        ),
    ),
    (
        "writes files on the database server",
        ("pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync"),
    ),
    ("uses large objects, which can read and write server files", ("lo_*", "loread", "lowrite")),
    ("connects to other databases", ("dblink*", "postgres_fdw_disconnect*")),
    (
        "runs SQL passed to it as text, which would read tables the policy never sees",
        (
            "query_to_xml*",
            "*_to_xml",
            "*_to_xml_*",
            "*_to_xmlschema",
            "ts_stat",
            "ts_rewrite",
            "crosstab*",
            "xpath_table",
            "connectby",
        ),
    ),
    ("changes session settings", ("set_config", "setseed")),
    ("holds the connection idle", ("pg_sleep*",)),
    ("takes advisory locks", ("pg_advisory_*", "pg_try_advisory_*")),
    ("changes a sequence", ("nextval", "setval", "next_value_for")),
    ("sends notifications to other sessions", ("pg_notify",)),
    (
        "reveals the catalog, the server's state or other databases",
        (
            "pg_get_*def",
            "pg_get_expr",
            "pg_get_userbyid",
            "pg_identify_object*",
            "pg_describe_object",
            "pg_get_object_address",
            "pg_get_catalog_foreign_keys",
            "pg_get_keywords",
            "current_setting",
            "pg_current_snapshot",
            "pg_snapshot_*",
            "pg_xact_status",
            "pg_xact_commit_timestamp*",
            "pg_last_committed_xact",
            "pg_export_snapshot",
            "pg_import_snapshot",
            "inet_server_*",
            "inet_client_*",
            "pg_backend_pid",
            "pg_postmaster_start_time",
            "pg_conf_load_time",
            "pg_stat_get_*",
            "pg_stat_file",
            "pg_database_size",
            "pg_tablespace_size",
            "pg_tablespace_location",
            "pg_tablespace_databases",
            "pg_relation_filepath",
            "pg_relation_filenode",
            "pg_filenode_relation",
            "pg_ls_*",
            "has_*_privilege",
            "pg_has_role",
            "pg_get_serial_sequence",
            "pg_sequence_last_value",
            "pg_sequence_parameters",
            "pg_options_to_table",
            "pg_settings_get_flags",
            "to_reg*",
            "obj_description",
            "shobj_description",
            "col_description",
        ),
    ),
    (
        "shows other sessions' query texts or the server's configuration",
        (
            "pg_stat_get_activity",
            "pg_stat_get_backend_*",
            "pg_show_all_settings",
            "pg_show_all_file_settings",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_config",
            "pg_get_replication_slots",
            "pg_stat_get_wal_receiver",
            "pg_stat_get_wal_senders",
            "pg_stat_get_subscription",
            "pg_get_shmem_allocations",
            "pg_get_backend_memory_contexts",
            "pg_control_*",
            "pg_current_logfile",
            "pg_lock_status",
            "pg_blocking_pids",
            "pg_safe_snapshot_blocking_pids",
            "pg_prepared_xact",
            "pg_cursor",
            "pg_prepared_statement",
            "pg_timezone_names",
        ),
    ),
    (
        "controls other sessions or the server",
        (
            "pg_cancel_backend",
            "pg_terminate_backend",
            "pg_reload_conf",
            "pg_rotate_logfile*",
            "pg_promote",
            "pg_wal_replay_*",
            "pg_xlog_replay_*",
            "pg_switch_wal",
            "pg_switch_xlog",
            "pg_create_restore_point",
            "pg_start_backup",
            "pg_stop_backup",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_log_backend_memory_contexts",
            "pg_stat_statements_reset",
            "pg_prewarm",
            "pg_stop_making_pinned_objects",
            "pg_nextoid",
            "pg_extension_config_dump",
            "binary_upgrade_*",
        ),
    ),
    (
        "resets or rewrites statistics",
        (
            "pg_stat_reset*",
            "pg_clear_*_stats",
            "pg_restore_*_stats",
            "pg_set_*_stats",
            "pg_stat_clear_snapshot",
            "pg_stat_force_next_flush",
        ),
    ),
    (
        "manages replication slots, origins or logical decoding",
        (
            "pg_logical_emit_message",
            "pg_logical_slot_*",
            "pg_create_*_replication_slot",
            "pg_copy_*_replication_slot",
            "pg_drop_replication_slot",
            "pg_replication_slot_advance",
            "pg_replication_origin_*",
            "pg_sync_replication_slots",
        ),
    ),
    (
        "changes catalogs or indexes",
        ("pg_import_system_collations", "brin_*summarize*", "gin_clean_pending_list"),
    ),
    ("assigns or inspects transaction ids", ("txid_*", "pg_current_xact_id*")),
    # SQLite: extensions and the shell's file functions
    ("loads code or touches files (SQLite)", ("load_extension", "readfile", "writefile", "edit", "fsdir")),
    ("corrupts memory in old SQLite versions", ("fts3_tokenizer",)),
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(translate(pattern)), reason) for reason, patterns in _RULES for pattern in patterns
)

#: sqlglot's own classes for calls with side effects, whatever name they were written with
SIDE_EFFECT_CLASSES: dict[type[exp.Expression], str] = {
    exp.NextValueFor: "changes a sequence",
    exp.ToFile: "writes files",
    exp.ReadCSV: "reads files",
    exp.ReadParquet: "reads files",
}

DENY_PATTERNS: tuple[str, ...] = tuple(pattern for _, patterns in _RULES for pattern in patterns)


@lru_cache(maxsize=4096)
def denied_reason(name: str) -> str | None:
    """Why a function of this (normalized, unqualified) name is never allowed, or None."""
    lowered = name.lower()
    for pattern, reason in _PATTERNS:
        if pattern.match(lowered):
            return reason
    return None
