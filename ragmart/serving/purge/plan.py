"""What a purge of one document would change (the plan, what ``--dry-run`` prints) and what it
changed (the report); ``ragmart.serving.purge.run`` makes both."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PurgePlan:
    """Every file and row a purge of one document changes."""

    document_id: str
    landing: dict[str, list[int | None]] = field(default_factory=dict)  # file -> record lines
    databases: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> table -> rows
    snapshots: dict[str, str] = field(default_factory=dict)  # snapshot -> its purged copy
    artifacts: dict[str, str] = field(default_factory=dict)  # file -> what happens to it
    unreadable: list[str] = field(default_factory=list)  # landing files to delete by hand
    # noncurrent versions holding the document (S3 versioning): object -> version ids
    versions: dict[str, list[str]] = field(default_factory=dict)
    max_change_seq: int | None = None

    @property
    def found(self) -> bool:
        """Whether any record of the document exists (artifacts alone do not make one)."""
        return bool(self.landing or self.databases or self.snapshots or self.unreadable
                    or self.versions)

    def to_dict(self) -> dict:
        return {"document_id": self.document_id, "landing": self.landing,
                "databases": self.databases, "snapshots": self.snapshots,
                "artifacts": self.artifacts, "unreadable": self.unreadable,
                "versions": self.versions,
                "max_change_seq": self.max_change_seq}


@dataclass
class PurgeReport:
    """What a purge changed (each step adds what it did)."""

    document_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)  # "file:table" -> rows
    files_rewritten: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    snapshots_replaced: dict[str, str] = field(default_factory=dict)  # old name -> new name
    # object versions removed (S3 versioning): object -> version ids
    versions_deleted: dict[str, list[str]] = field(default_factory=dict)
    max_change_seq: int | None = None
    completed_interrupted_purge: bool = False
