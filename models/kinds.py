"""The kinds of model depthkd writes, passes between stages and registers: one vocabulary for a
model file's `arch["kind"]`, what each stage consumes and produces, and a job's inputs and
registered versions."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """A model file's kind (stored as its plain string value: files load with weights_only)."""

    TEACHER = "teacher"  # a depth teacher: pretrained, given, or trained by the `teacher` stage
    ACCLIMATED_TEACHER = "acclimated_teacher"  # teacher + ghost decoder fitted to one student
    STUDENT = "student"
