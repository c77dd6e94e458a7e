"""The embedded LeVo-shaped tiny song model: symbolic score, codec, composer and renderer."""
