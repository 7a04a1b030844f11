"""The three classes (ids: the Oxford-IIIT Pet trimap values minus one), their names and their colours.

>>> CLASS_NAMES[0], PALETTE[0]
('pet', (255, 127, 14))
"""

PET, BACKGROUND, BORDER = 0, 1, 2

CLASS_NAMES: tuple[str, ...] = ("pet", "background", "border")
NUM_CLASSES = len(CLASS_NAMES)

# RGB colours: a warm orange pet, a muted blue background, a bright yellow border.
PALETTE: tuple[tuple[int, int, int], ...] = ((255, 127, 14), (31, 119, 180), (255, 221, 51))
