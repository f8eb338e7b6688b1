// A real OpenID Connect provider for the SSO tests: oidc-provider with a confidential and a public client,
// PKCE required, its development login and consent pages, and accounts read from a JSON file at
// every lookup (a test rewrites the file to change a user's groups between logins).
//
//   node provider.mjs <settings.json>
//
// settings.json: {"port": 0, "client_id": "...", "client_secret": "...", "public_client_id": "...",
//                 "redirect_uris": [...],
//                 "post_logout_redirect_uris": [...], "accounts_file": "/path/accounts.json"}
// accounts.json: {"alice": {"groups": ["finance"], "email": "alice@example.com"},
//                 "late": {"id_token_ttl": 1, "token_delay_ms": 2000}}
// Any login name signs in (the development login form takes any password); a name missing from
// accounts.json gets no groups. Prints "listening <issuer>" once it accepts connections.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function account(id) {
  const all = JSON.parse(readFileSync(settings.accounts_file, 'utf8'));
  return all[id] || {};
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

function configuration() {
  return {
    clients: [{
      client_id: settings.client_id,
      client_secret: settings.client_secret,
      redirect_uris: settings.redirect_uris,
      post_logout_redirect_uris: settings.post_logout_redirect_uris || [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }, {
      // a public client (no secret: PKCE alone), when settings name one
      client_id: settings.public_client_id || `${settings.client_id}-public`,
      redirect_uris: settings.redirect_uris,
      post_logout_redirect_uris: settings.post_logout_redirect_uris || [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    }],
    jwks: { keys: [signing] },
    cookies: { keys: ['bastion-test-provider-cookie-key'] },
    pkce: { required: () => true },
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    ttl: {
      IdToken(ctx, token) {
        return account(token.available?.sub).id_token_ttl || 3600;
      },
    },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          const a = account(sub);
          return {
            sub,
            preferred_username: a.preferred_username || sub,
            name: a.name || sub,
            email: a.email || `${sub}@example.com`,
            email_verified: true,
            groups: a.groups || [],
          };
        },
      };
    },
  };
}

const server = createServer();
server.listen(settings.port || 0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration());
  // an account's token_delay_ms holds back its token response: with id_token_ttl 1, the ID token
  // has expired when the client receives it
  provider.use(async (ctx, next) => {
    await next();
    const id = ctx.path === '/token' && ctx.oidc?.entities?.Account?.accountId;
    const delay = id ? account(id).token_delay_ms : 0;
    if (delay) await new Promise((resolve) => { setTimeout(resolve, delay); });
  });
  server.on('request', provider.callback());
  process.stdout.write(`listening ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
