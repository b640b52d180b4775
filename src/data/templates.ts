// Built-in prompt templates for the 'template' caption source (`caption.templates: object | style`).
//
// Source: the textual-inversion paper's `imagenet_templates_small` and `imagenet_style_templates_small`
// (rinongal/textual_inversion, ldm/data/personalized.py; the same lists are in diffusers' textual_inversion.py),
// with `{}` written as `[name]` and A1111's `, [filewords]` suffix appended. 'object' is then exactly A1111's
// textual_inversion_templates/subject_filewords.txt. (A1111's style_filewords.txt words its style set differently:
// "a painting of [filewords], art by [name]"; we keep the paper's wording, which the schema documents.)
// When an image has no caption, `[filewords]` is empty and the dangling ", " is dropped, so the prompt is the paper's.

const OBJECT = [
  'a photo of a [name]',
  'a rendering of a [name]',
  'a cropped photo of the [name]',
  'the photo of a [name]',
  'a photo of a clean [name]',
  'a photo of a dirty [name]',
  'a dark photo of the [name]',
  'a photo of my [name]',
  'a photo of the cool [name]',
  'a close-up photo of a [name]',
  'a bright photo of the [name]',
  'a cropped photo of a [name]',
  'a photo of the [name]',
  'a good photo of the [name]',
  'a photo of one [name]',
  'a close-up photo of the [name]',
  'a rendition of the [name]',
  'a photo of the clean [name]',
  'a rendition of a [name]',
  'a photo of a nice [name]',
  'a good photo of a [name]',
  'a photo of the nice [name]',
  'a photo of the small [name]',
  'a photo of the weird [name]',
  'a photo of the large [name]',
  'a photo of a cool [name]',
  'a photo of a small [name]',
];

const STYLE = [
  'a painting in the style of [name]',
  'a rendering in the style of [name]',
  'a cropped painting in the style of [name]',
  'the painting in the style of [name]',
  'a clean painting in the style of [name]',
  'a dirty painting in the style of [name]',
  'a dark painting in the style of [name]',
  'a picture in the style of [name]',
  'a cool painting in the style of [name]',
  'a close-up painting in the style of [name]',
  'a bright painting in the style of [name]',
  'a cropped painting in the style of [name]',
  'a good painting in the style of [name]',
  'a close-up painting in the style of [name]',
  'a rendition in the style of [name]',
  'a nice painting in the style of [name]',
  'a small painting in the style of [name]',
  'a weird painting in the style of [name]',
  'a large painting in the style of [name]',
];

export const OBJECT_TEMPLATES: readonly string[] = OBJECT.map((t) => `${t}, [filewords]`);
export const STYLE_TEMPLATES: readonly string[] = STYLE.map((t) => `${t}, [filewords]`);

/** The template lines for a `caption.templates` value. */
export function templateLines(templates: 'object' | 'style' | readonly string[]): readonly string[] {
  if (templates === 'object') return OBJECT_TEMPLATES;
  if (templates === 'style') return STYLE_TEMPLATES;
  return templates;
}
