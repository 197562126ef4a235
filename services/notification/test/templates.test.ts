import { describe, expect, test } from 'bun:test'
import { html, SafeHtml, singleLine } from '../src/modules/mail/html'
import { newMessageMail, verificationCodeMail, welcomeMail } from '../src/modules/mail/templates'

describe('html', () => {
  test('escapes every interpolated value', () => {
    const hostile = `<script>alert("x")</script> & 'quotes'`
    expect(html`<p title="${hostile}">${hostile}</p>`.value).toBe(
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;</p>',
    )
  })

  test('embeds nested safe markup as is, and numbers', () => {
    const inner = html`<b>${'<i>'}</b>`
    expect(html`<p>${inner} ${3}</p>`).toEqual(new SafeHtml('<p><b>&lt;i&gt;</b> 3</p>'))
    expect(html`<ul>${['a', 'b'].map((item) => html`<li>${item}</li>`)}</ul>`.value).toBe(
      '<ul><li>a</li><li>b</li></ul>',
    )
  })
})

test('singleLine removes line breaks and other control characters', () => {
  expect(singleLine('Eve\r\nBcc: x@y\u2028z\tw\u0000')).toBe('Eve Bcc: x@y z w')
})

describe('templates', () => {
  test('welcome greets by name; the subject is one line', () => {
    const mail = welcomeMail('Zoë\r\nX-Injected: yes')
    expect(mail.template).toBe('welcome')
    expect(mail.subject).toBe('Welcome to Parley, Zoë X-Injected: yes')
    expect(mail.text).toContain('Hi Zoë X-Injected: yes,')
  })

  test('verification code shows the code and validity', () => {
    const mail = verificationCodeMail('Al', '123456', 1)
    expect(mail.text).toContain('is: 123456')
    expect(mail.text).toContain('expires in 1 minute.')
    expect(mail.html).toContain('>123456</p>')
    expect(mail.subject).not.toContain('123456')
  })

  test('new message escapes the preview and names in HTML, quotes them in text', () => {
    const mail = newMessageMail('<u>Rae</u>', 'Sid & "Co"', 'line one\n<script>two</script>')
    expect(mail.subject).toBe('New message from Sid & "Co" on Parley')
    expect(mail.html).toContain('&lt;u&gt;Rae&lt;/u&gt;')
    expect(mail.html).toContain('Sid &amp; &quot;Co&quot;')
    expect(mail.html).toContain('line one\n&lt;script&gt;two&lt;/script&gt;')
    expect(mail.html).not.toMatch(/<script|<u>/)
    expect(mail.text).toContain('> line one\n> <script>two</script>')
  })
})
