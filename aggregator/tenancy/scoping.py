"""The one mechanism that scopes customer data to an organization.

Every model holding customer data derives from ``TenantModel`` (or sets ``tenant_path`` when the
organization is reached through a relation). Reads go through ``scoped(model, organization)``;
views, API viewsets and downloads use ``OrganizationScopedMixin``, whose ``get_queryset`` can
only return the current organization's rows: an id from another organization is a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from django.db import models

if TYPE_CHECKING:
    from aggregator.tenancy.models import Organization

M = TypeVar("M", bound=models.Model)


class TenantQuerySet(models.QuerySet[M]):
    def for_organization(self, organization: Organization) -> TenantQuerySet[M]:
        path: str = getattr(self.model, "tenant_path", "organization")
        return self.filter(**{path: organization})


class TenantModel(models.Model):
    """Abstract base of every model that belongs to one customer organization."""

    organization = models.ForeignKey("tenancy.Organization", on_delete=models.CASCADE, related_name="+")

    tenant_path: ClassVar[str] = "organization"
    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


def scoped(model_or_queryset: type[M] | models.QuerySet[M], organization: Organization | None) -> models.QuerySet[M]:
    """The rows of ``model_or_queryset`` that belong to ``organization`` (none when it is None)."""
    queryset = (
        model_or_queryset
        if isinstance(model_or_queryset, models.QuerySet)
        else model_or_queryset._default_manager.all()
    )
    if organization is None:
        return queryset.none()
    path: str = getattr(queryset.model, "tenant_path", None) or _missing_path(queryset.model)
    return queryset.filter(**{path: organization})


def _missing_path(model: type[models.Model]) -> str:
    raise TypeError(f"{model.__name__} is not tenant data: give it a tenant_path or derive it from TenantModel.")


class OrganizationScopedMixin:
    """For API viewsets and portal views: the queryset is the current organization's rows only.

    Set ``scoped_model`` (or ``queryset``); the tenant-isolation test finds every route that takes
    an object id and checks it through this attribute.
    """

    scoped_model: ClassVar[type[models.Model] | None] = None
    request: Any

    def get_scoped_model(self) -> type[models.Model]:
        if self.scoped_model is not None:
            return self.scoped_model
        queryset = getattr(self, "queryset", None)
        if queryset is None:
            raise TypeError(f"{type(self).__name__} needs scoped_model or queryset.")
        return queryset.model

    def get_queryset(self) -> models.QuerySet[Any]:
        from aggregator.tenancy.context import organization_for_request

        base = getattr(self, "queryset", None)
        source = base.all() if base is not None else self.get_scoped_model()
        return scoped(source, organization_for_request(self.request))
