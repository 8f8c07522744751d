"""COCO-17 skeleton constants shared by intensity, transforms and heatmaps.

Kept in one place because the reference code scatters several *different* tables
(heatmap limbs, the intensity bone table, the angle table); each is named here after
its use so the differences stay visible (docs/method.md §1, §2.3, §2.4).
"""

from __future__ import annotations

NUM_JOINTS = 17

JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

LEFT_KP: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 13, 15)
RIGHT_KP: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16)


def _swap_permutation(left: tuple[int, ...], right: tuple[int, ...], n: int) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in zip(left, right, strict=True):
        perm[a], perm[b] = b, a
    return tuple(perm)


# FLIP_INDEX[k] = the joint whose data lands in slot k after a horizontal flip.
FLIP_INDEX: tuple[int, ...] = _swap_permutation(LEFT_KP, RIGHT_KP, NUM_JOINTS)

# Heatmap limbs: GeneratePoseTarget's default list (docs/method.md §1, §5), and its flip pairs.
LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8),
    (8, 10), (5, 11), (11, 13), (13, 15), (6, 12), (12, 14), (14, 16), (11, 12),
)
LEFT_LIMB: tuple[int, ...] = (0, 2, 4, 5, 6, 10, 11, 12)
RIGHT_LIMB: tuple[int, ...] = (1, 3, 7, 8, 9, 13, 14, 15)
LIMB_FLIP_INDEX: tuple[int, ...] = _swap_permutation(LEFT_LIMB, RIGHT_LIMB, len(LIMBS))

# Intensity bone table of the reference code, joint -> neighbour (docs/method.md §2.3).
# Note 0 -> 9: the reference points the nose's bone at the LEFT WRIST.
REFERENCE_BONE_NEIGHBOUR: dict[int, int] = {
    9: 7, 7: 5, 5: 0, 10: 8, 8: 6, 6: 0, 0: 9, 3: 1, 1: 0,
    4: 2, 2: 0, 15: 13, 13: 11, 11: 5, 16: 14, 14: 12, 12: 6,
}

# The same table as an index array source: REFERENCE_BONE_END[j] = the other end of joint j's bone.
REFERENCE_BONE_END: tuple[int, ...] = tuple(REFERENCE_BONE_NEIGHBOUR[j] for j in range(NUM_JOINTS))

# Angle table, vertex -> (end1, end2) (docs/method.md §2.4). Dict order matters in reference mode:
# the aliasing bug keeps only the first vertex (9, the left wrist).
ANGLE_TABLE: dict[int, tuple[int, int]] = {
    9: (7, 5), 7: (9, 5), 5: (7, 6), 6: (5, 8), 8: (6, 10), 10: (8, 6), 3: (1, 0), 1: (3, 0),
    2: (0, 4), 4: (2, 0), 0: (5, 11), 15: (13, 11), 13: (15, 11), 11: (5, 13), 12: (6, 14),
    14: (12, 16), 16: (14, 12),
}

LEFT_HIP, RIGHT_HIP, LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12, 5, 6
HIPS: tuple[int, int] = (LEFT_HIP, RIGHT_HIP)  # their midpoint is the trunk's lower end
SHOULDERS: tuple[int, int] = (LEFT_SHOULDER, RIGHT_SHOULDER)  # their midpoint is the trunk's upper end
