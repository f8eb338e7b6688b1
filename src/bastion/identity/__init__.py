"""Users and groups kept in step with a company directory (LDAP / Active Directory, SCIM)."""
