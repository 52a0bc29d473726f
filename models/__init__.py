"""Model zoo of depthkd: timm backbones, students, teachers, decoders and KD losses (issue 3)."""
