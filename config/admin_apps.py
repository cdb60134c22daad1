from django.contrib.admin.apps import AdminConfig


class TollgateAdminConfig(AdminConfig):
    """django.contrib.admin with Tollgate's site (billing/site.py: branded, and the licensor's
    workspace as a reviewer's home page) as the default `admin.site`."""

    default_site = "billing.site.TollgateAdminSite"
