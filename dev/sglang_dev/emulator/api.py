"""The write and read verbs of the API on the store: create, get, list, update, patch, delete.

Each verb builds the candidate object purely, checks it, and only then stores it, so a refused request
(validation, conflict, dry run) never changes anything.
"""

from __future__ import annotations

import builtins  # `list` is also a verb of this class
import copy
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import admission, crds, defaults, gc, objects, patch, ssa
from .errors import ApiError, FieldError, already_exists, bad_request, conflict, invalid, not_found
from .objects import Obj
from .resources import ResourceType
from .selectors import compile_selectors
from .store import Store


@dataclass(frozen=True)
class WriteOptions:
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    propagation: str = "Background"  # Background | Foreground | Orphan
    force: bool = False
    grace_period: int | None = None  # DeleteOptions.gracePeriodSeconds (pods)
    field_manager: str | None = None


@dataclass
class Result:
    obj: Obj
    code: int = 200
    warnings: list[str] = field(default_factory=list)


class Api:
    def __init__(self, store: Store, graceful_pods: bool = False) -> None:
        self.store = store
        self.graceful_pods = graceful_pods  # see gc.delete: running pods wait for their kubelet
        self._ips = defaults.ClusterIPs()

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str, sub: str | None = None) -> Obj:
        obj = self._existing(rt, namespace, name)
        if sub == "scale":
            return objects.scale_view(self._scalable(rt), obj)
        return objects.view(rt, obj)

    def list(
        self, rt: ResourceType, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Obj:
        matches = compile_selectors(label_selector, field_selector)
        items = [objects.view(rt, o) for o in self.store.items(rt.key, namespace) if matches(o)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    # -- writes --------------------------------------------------------------------------------------
    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        opts: WriteOptions,
        managed: builtins.list[Obj] | None = None,
    ) -> Result:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        self._check_kind(rt, obj)
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise bad_request("the namespace of the object is required")
            self._require_namespace(namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = objects.generated_name(meta["generateName"])
        errors = objects.name_errors(meta.get("name"))
        if errors:
            raise invalid(rt.kind, rt.group, str(meta.get("name", "")), errors)
        if self.store.get(rt.key, namespace, meta["name"]) is not None:
            raise already_exists(rt.plural, rt.group, meta["name"])
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(key, None)
        meta.update(uid=objects.new_uid(), creationTimestamp=objects.now())
        if managed:
            meta["managedFields"] = managed
        if rt.tracks_generation or rt.group == "apps":
            meta["generation"] = 1
        if rt.status_subresource and rt.key != ("", "namespaces"):
            status = objects.initial_status(rt)
            obj.pop("status", None)
            if status is not None:
                obj["status"] = status
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        defaults.apply(rt, obj, None, self._ips)
        warnings = admission.admit(rt, obj, opts.field_validation)
        if rt.key == crds.CRD_KEY:
            crds.establish(obj)
        if opts.dry_run:
            return Result(objects.view(rt, obj), 201, warnings)
        meta["resourceVersion"] = self.store.next_rv()
        self.store.put(rt.key, obj, None)
        self._after_write(rt, obj, None)
        return Result(objects.view(rt, obj), 201, warnings)

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        sub: str | None,
        body: Any,
        opts: WriteOptions,
    ) -> Result:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        old = self._existing(rt, namespace, name)
        body_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sub == "scale":
            return self._write_scale(rt, old, body, opts)
        if not body_rv and rt.custom:
            raise invalid(
                rt.kind,
                rt.group,
                name,
                [
                    FieldError(
                        "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update"
                    )
                ],
            )
        return self._update(rt, old, copy.deepcopy(body), sub, opts)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        sub: str | None,
        content_type: str,
        raw: bytes,
        opts: WriteOptions,
    ) -> Result:
        kind = content_type.split(";")[0].strip()
        if kind not in patch.PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(patch.PATCH_TYPES)}",
            )
        if kind == patch.STRATEGIC_PATCH and rt.custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom "
                "resources: use a JSON merge patch or server-side apply",
            )
        try:
            body = yaml.safe_load(raw) if kind == patch.APPLY_PATCH else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the patch body is not valid: {exc}") from exc
        old = self.store.get(rt.key, namespace, name)
        if kind == patch.APPLY_PATCH and sub is None:
            return self._apply(rt, namespace, name, old, body, opts)
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        if sub == "scale":
            return self._write_scale(
                rt, old, self._patched(rt, kind, objects.scale_view(self._scalable(rt), old), body), opts
            )
        candidate = self._patched(rt, kind, objects.view(rt, old), body)
        return self._update(rt, old, candidate, sub, opts)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        opts: WriteOptions,
        preconditions: dict[str, Any] | None = None,
    ) -> Result:
        obj = self._existing(rt, namespace, name)
        for key in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(key)
            if wanted and wanted != obj["metadata"].get(key):
                raise conflict(rt.plural, rt.group, name)
        if opts.dry_run:
            return Result(objects.view(rt, obj))
        return Result(objects.view(rt, gc.delete(self, rt, obj, opts.propagation, opts.grace_period)))

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        opts: WriteOptions,
    ) -> Obj:
        listed = self.list(rt, namespace, label_selector, field_selector)
        for item in listed["items"]:
            meta = item["metadata"]
            if self.store.get(rt.key, meta.get("namespace"), meta["name"]) is not None and not opts.dry_run:
                gc.delete(self, rt, item, opts.propagation, opts.grace_period)
        return listed

    # -- internals -----------------------------------------------------------------------------------
    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace if rt.namespaced else None, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def _scalable(self, rt: ResourceType) -> ResourceType:
        if rt.scale is None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({rt.plural}/scale)"
            )
        return rt

    def _require_namespace(self, namespace: str) -> None:
        if self.store.get(("", "namespaces"), None, namespace) is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )

    @staticmethod
    def _check_kind(rt: ResourceType, obj: Obj) -> None:
        if obj.get("kind") and obj["kind"] != rt.kind:
            raise bad_request(
                f"the kind of the object ({obj['kind']}) does not match the kind of the resource ({rt.kind})"
            )

    @staticmethod
    def _patched(rt: ResourceType, kind: str, target: Obj, body: Any) -> Obj:
        if kind == patch.JSON_PATCH:
            return patch.json_patch(target, body)
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        if kind == patch.MERGE_PATCH:
            return patch.merge_patch(target, body)
        keys = patch.schema_list_keys(rt.schema) if rt.custom else None
        return patch.strategic_merge(target, body, keys)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        old: Obj | None,
        body: Any,
        opts: WriteOptions,
    ) -> Result:
        """Server-side apply: create or merge, with field ownership per manager (see ssa.py)."""
        if not isinstance(body, dict):
            raise bad_request("the applied configuration must be an object")
        if not opts.field_manager:
            raise invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    FieldError(
                        "fieldManager", "Required value: is required for apply patch", "FieldValueRequired"
                    )
                ],
            )
        body.setdefault("metadata", {}).setdefault("name", name)
        if body["metadata"]["name"] != name:
            raise bad_request("the name of the object does not match the name on the URL")
        keys = patch.schema_list_keys(rt.schema) if rt.custom else None
        target = None if old is None else objects.view(rt, old)
        merged, managed = ssa.apply(target, body, opts.field_manager, keys, rt.api_version, objects.now())
        if old is None:
            return self.create(rt, namespace, merged, opts, managed)
        return self._update(rt, old, merged, None, opts, managed)

    def _write_scale(self, rt: ResourceType, old: Obj, scale: Any, opts: WriteOptions) -> Result:
        self._scalable(rt)
        if not isinstance(scale, dict):
            raise bad_request("a Scale must be an object")
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, old["metadata"]["name"])
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                "Scale",
                "autoscaling",
                old["metadata"]["name"],
                [
                    FieldError(
                        "spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"
                    )
                ],
            )
        candidate = objects.with_replicas(rt, objects.view(rt, old), replicas)
        result = self._update(rt, old, candidate, None, opts)
        return Result(objects.scale_view(rt, result.obj), 200, result.warnings)

    def _update(
        self,
        rt: ResourceType,
        old: Obj,
        new: Obj,
        sub: str | None,
        opts: WriteOptions,
        managed: builtins.list[Obj] | None = None,
    ) -> Result:
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise bad_request("the updated object must be an object with object metadata")
        self._check_kind(rt, new)
        new = copy.deepcopy(new)  # patches share unchanged subtrees with the stored object
        old_meta, meta = old["metadata"], new.setdefault("metadata", {})
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise conflict(rt.plural, rt.group, old_meta["name"])
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise bad_request("the name of the object does not match the name on the URL")
        if sub == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                del new["status"]
        elif rt.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
            "resourceVersion",
            "managedFields",
        ):
            meta.pop(key, None)
            if key in old_meta:
                meta[key] = old_meta[key]
        if managed is not None:
            meta["managedFields"] = managed
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if rt.key == ("", "namespaces"):
            new["status"] = old.get("status", {})
        if sub != "status":
            defaults.apply(rt, new, old, self._ips)
        warnings = admission.admit(rt, new, opts.field_validation, old)  # status writes too
        if rt.key == crds.CRD_KEY:
            crds.establish(new)
        if new == old:  # a no-op write changes nothing: no new resourceVersion, no watch event
            return Result(objects.view(rt, old), 200, warnings)
        if "generation" in old_meta and objects.spec_part(new) != objects.spec_part(old):
            meta["generation"] = old_meta["generation"] + 1
        if opts.dry_run:
            return Result(objects.view(rt, new), 200, warnings)
        meta["resourceVersion"] = self.store.next_rv()
        self.store.put(rt.key, new, old)
        self._after_write(rt, new, old)
        if meta.get("deletionTimestamp") and not gc.held(new):
            return Result(objects.view(rt, gc.finalize(self, rt, new)), 200, warnings)
        return Result(objects.view(rt, new), 200, warnings)

    def _after_write(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rt.key == crds.CRD_KEY:
            crds.register(self.store, obj, old)
