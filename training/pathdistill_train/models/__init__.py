"""Student and teacher construction (timm ``create_model``)."""

from pathdistill_train.models.build import TokenEncoder, build_student, build_teacher, check_image_size

__all__ = ["TokenEncoder", "build_student", "build_teacher", "check_image_size"]
