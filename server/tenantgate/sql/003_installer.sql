-- tenantgate schema, version 3: the role that installs is recorded.
--
-- Version 1 makes a non-superuser installer a member of tenantgate_owner (to hand it the
-- objects). Lint and install took "the installer" to be whoever ran them: after such an install
-- any other role found that membership unsafe and install refused to upgrade, while a member
-- running lint itself was never reported. schema_version.installed_by now names the role that
-- applied a version, and only the roles named there may be members of tenantgate_owner.
--
-- An install made before version 3 records no installer: upgrade it as the role that installed
-- it (or as a superuser when no other role is a member). Idempotent, like versions 1 and 2.

SET ROLE tenantgate_owner;

ALTER TABLE tenantgate.schema_version ADD COLUMN IF NOT EXISTS installed_by name;

RESET ROLE;

-- current_user before SET ROLE is the installer, whom version 1 made a member of the owner role.
-- Recorded last, as each version's row is, and in one statement, which a migration tool running
-- each statement in a transaction of its own keeps together.
DO $installer$
DECLARE
    installer name := current_user;
BEGIN
    SET ROLE tenantgate_owner;
    INSERT INTO tenantgate.schema_version (version, installed_by) VALUES (3, installer)
        ON CONFLICT (version) DO NOTHING;
END
$installer$;

RESET ROLE;
