"""What db lint reports: a closed vocabulary of problems and one finding per object concerned."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Problem(enum.StrEnum):
    NOT_INSTALLED = "not_installed"
    NO_TENANT_TABLES = "no_tenant_tables"
    RLS_DISABLED = "rls_disabled"
    RLS_NOT_FORCED = "rls_not_forced"
    NO_CONTEXT_POLICY = "no_context_policy"
    PERMISSIVE_POLICY_WITHOUT_CONTEXT = "permissive_policy_without_context"
    PER_ROW_CONTEXT_CALL = "per_row_context_call"
    UNSIGNED_SETTING_IN_POLICY = "unsigned_setting_in_policy"
    WRONG_CONTEXT_CALL = "wrong_context_call"
    UNSAFE_TENANT_COLUMN = "unsafe_tenant_column"
    UNISOLATED_PARENT = "unisolated_parent"
    VIEW_BYPASSES_RLS = "view_bypasses_rls"
    APP_ROLE_MISSING = "app_role_missing"
    APP_ROLE_BYPASSES_RLS = "app_role_bypasses_rls"
    APP_ROLE_OWNS_TABLE = "app_role_owns_table"
    APP_ROLE_READS_KEYS = "app_role_reads_keys"
    APP_ROLE_CREATES_ROLES = "app_role_creates_roles"
    APP_ROLE_EXTRA_PRIVILEGE = "app_role_extra_privilege"
    APP_ROLE_CREATES_OBJECTS = "app_role_creates_objects"
    FOREIGN_SCHEMA_OBJECT = "foreign_schema_object"
    FOREIGN_KEY_WITHOUT_TENANT = "foreign_key_without_tenant"
    UNSAFE_TENANTGATE_ROLE = "unsafe_tenantgate_role"


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    problem: Problem
    subject: str  # the table, policy, view or role concerned
    detail: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.subject}: {self.detail}"
